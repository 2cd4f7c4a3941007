//! The CPU kernels give the same results whatever the size of the thread pool they run on:
//! kiln-serve's model workers run on pools of one thread, training on the global pool.

use burn::prelude::*;
use burn::tensor::Distribution;
use burn_flex::Flex;
use kiln_models::{NetConfig, ResNetArch, ResNetConfig, Yolox, YoloxVariant};

/// Runs `f` on a fresh pool of `threads` threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `forward` on one thread and on three agree within 1e-4 relative.
fn same_on_one_and_three_threads(what: &str, forward: impl Fn() -> Vec<f32> + Sync) {
    let one = on_threads(1, &forward);
    let three = on_threads(3, &forward);
    assert_eq!(one.len(), three.len(), "{what}");
    let scale = three.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-4 * scale,
            "{what}: output {i} is {a} on one thread, {b} on three"
        );
    }
}

/// Elementwise ops on a tensor large enough to be split over the pool (2^17 elements) agree
/// with the same formula computed here, on one thread and on three.
#[test]
fn large_elementwise_ops() {
    let x = input([2, 4, 128, 128]);
    let values: Vec<f32> = x.to_data().to_vec().unwrap();
    let expected: Vec<f32> = values.iter().map(|&v| (v.max(0.0) * 2.0 + v).exp() - v).collect();
    let forward = || {
        let y = burn::tensor::activation::relu(x.clone()) * 2.0 + x.clone();
        (y.exp() - x.clone()).into_data().to_vec::<f32>().unwrap()
    };
    for threads in [1, 3] {
        let got = on_threads(threads, forward);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{threads} threads, element {i}: {g} vs {e}"
            );
        }
    }
}

/// A large random tensor (a dropout mask's size) depends on the seed only: the same values on
/// one thread and on three, different values from another seed, and Bernoulli(0.25) draws
/// about a quarter ones.
#[test]
fn large_random_tensors_depend_on_the_seed_only() {
    let draw = |seed: u64, threads: usize| {
        on_threads(threads, || {
            let device = Default::default();
            Flex::seed(&device, seed);
            Tensor::<Flex, 1>::random([300_000], Distribution::Bernoulli(0.25), &device)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        })
    };
    let one = draw(7, 1);
    assert_eq!(one, draw(7, 3));
    assert_ne!(one, draw(8, 3));
    let ones = one.iter().filter(|&&v| v == 1.0).count() as f64 / one.len() as f64;
    assert!((ones - 0.25).abs() < 0.005, "share of ones {ones}");
    assert!(one.iter().all(|&v| v == 0.0 || v == 1.0));
}

/// Each thread has its own seeded generator: two threads seeded alike draw the same values
/// while they interleave their draws, as two processes would.
#[test]
fn each_thread_draws_its_own_seeds_sequence() {
    let draws = |seed: u64, barrier: Option<&std::sync::Barrier>| {
        let device = Default::default();
        Flex::seed(&device, seed);
        (0..8)
            .map(|_| {
                if let Some(b) = barrier {
                    b.wait();
                }
                Tensor::<Flex, 1>::random([16], Distribution::Default, &device)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let alone = draws(5, None);
    let barrier = std::sync::Barrier::new(2);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| draws(5, Some(&barrier)));
        let b = s.spawn(|| draws(5, Some(&barrier)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, alone);
    assert_eq!(b, alone);
    assert_ne!(alone[0], alone[1], "successive draws differ");
}

fn input(shape: [usize; 4]) -> Tensor<Flex, 4> {
    let device = Default::default();
    Flex::seed(&device, 3);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

#[test]
fn net_forward() {
    let net = NetConfig::new().init::<Flex>(&Default::default());
    let x = input([4, 1, 28, 28]);
    same_on_one_and_three_threads("Net", || net.forward(x.clone()).into_data().to_vec().unwrap());
}

#[test]
fn resnet18_forward() {
    let model = ResNetConfig::new(ResNetArch::ResNet18, 10).init::<Flex>(&Default::default());
    let x = input([2, 3, 64, 64]);
    same_on_one_and_three_threads("resnet18", || model.forward(x.clone()).into_data().to_vec().unwrap());
}

#[test]
fn yolox_nano_forward() {
    let model = Yolox::<Flex>::new(YoloxVariant::Nano, 3, &Default::default());
    let x = input([2, 3, 64, 64]);
    same_on_one_and_three_threads("yolox-nano", || {
        model
            .forward(x.clone())
            .into_iter()
            .flat_map(|level| level.into_data().to_vec::<f32>().unwrap())
            .collect()
    });
}
