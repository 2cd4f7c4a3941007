//! Where GPU runs keep what they learn about the machine, so that a job's second run starts at
//! full speed: cubecl's autotune results (which kernel is fastest for each shape) and its
//! compiled kernels, both under [`cache_dir`]. cubecl's own default keeps the autotune results
//! beside a `Cargo.toml` or in the user's cache folder and compiles kernels afresh in every
//! process.

use std::path::PathBuf;

/// The environment variable naming the cache folder.
pub const CACHE_ENV: &str = "KILN_CACHE_DIR";

/// The cache folder: `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`,
/// else `.kiln-cache` in the working folder; `env` looks a variable up.
pub fn cache_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = set(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = set("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("kiln");
    }
    match set("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("kiln"),
        None => PathBuf::from(".kiln-cache"),
    }
}

/// Points cubecl's autotune cache at `<cache>/autotune` and its kernel cache at
/// `<cache>/kernels`, keeping the rest of its configuration (a `cubecl.toml` or `burn.toml`
/// above the working folder, its environment variables). Call it first thing in `main`,
/// before any GPU work: cubecl's configuration can be set only before it is first read.
#[cfg(feature = "cuda")]
pub fn persist_kernel_caches() -> PathBuf {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    let dir = cache_dir(|name| std::env::var(name).ok());
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.autotune.cache = CacheConfig::File(dir.join("autotune"));
    config.compilation.cache = Some(CacheConfig::File(dir.join("kernels")));
    CubeClRuntimeConfig::set(config);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_folder_follows_the_environment() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
        let all = [("KILN_CACHE_DIR", "/data/k"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir(env(&all)), PathBuf::from("/data/k"));
        assert_eq!(cache_dir(env(&all[1..])), PathBuf::from("/x/kiln"));
        assert_eq!(cache_dir(env(&all[2..])), PathBuf::from("/h/.cache/kiln"));
        assert_eq!(
            cache_dir(env(&[("KILN_CACHE_DIR", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.cache/kiln")
        );
        assert_eq!(cache_dir(env(&[])), PathBuf::from(".kiln-cache"));
    }
}
