//! The server in-process with stand-in models: readiness, batching, overload, deadlines and
//! graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{encode_digit, test_digits};
use image::ImageFormat;
use kiln_infer::batcher::BatchPolicy;
use kiln_infer::registry::{ImageModel, Prediction};
use kiln_infer::tls::TlsMode;
use kiln_infer::{serve, ServeConfig, ServeError, WorkerLayout};
use reqwest::multipart::{Form, Part};
use tokio::sync::oneshot;

/// Answers class 3 for everything, after `delay`, recording each batch size.
struct SlowModel {
    delay: Duration,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl ImageModel for SlowModel {
    fn predict(&self, inputs: Vec<f32>, n: usize) -> Vec<Prediction> {
        assert_eq!(inputs.len(), n * 784);
        std::thread::sleep(self.delay);
        self.batches.lock().unwrap().push(n);
        let one_hot: Vec<f32> = (0..10).map(|k| if k == 3 { 1.0 } else { 0.0 }).collect();
        vec![Prediction::Classes(one_hot); n]
    }
}

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    batches: Arc<Mutex<Vec<usize>>>,
}

async fn start(
    delay: Duration,
    policy: BatchPolicy,
    timeout: Duration,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> Running {
    start_with(delay, policy, timeout, gate, |_| {}).await
}

/// [`start`], with the configuration changed by `tune` first.
async fn start_with(
    delay: Duration,
    policy: BatchPolicy,
    timeout: Duration,
    gate: Option<std::sync::mpsc::Receiver<()>>,
    tune: impl FnOnce(&mut ServeConfig),
) -> Running {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let model = SlowModel {
        delay,
        batches: batches.clone(),
    };
    let loader = move || {
        if let Some(g) = gate {
            g.recv().unwrap();
        }
        Ok(Box::new(model) as Box<dyn ImageModel>)
    };
    let mut config = ServeConfig {
        model_dir: "unused".into(),
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Off,
        policy,
        max_body: 1_000_000,
        max_pixels: 1_000_000,
        timeout,
        drain: Duration::from_secs(10),
        unready_grace: Duration::ZERO,
        decode_memory: 256 << 20,
        decode_slots: 2,
        header_timeout: Duration::from_secs(10),
        max_connections: 1000,
        device: "cpu".into(),
    };
    tune(&mut config);
    let package = kiln_models::net_package_config(&kiln_models::NetConfig::new());
    let (addr_tx, addr_rx) = oneshot::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        config,
        package,
        loader,
        move |addr, _| {
            let _ = addr_tx.send(addr);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = addr_rx.await.unwrap();
    Running {
        base: format!("http://{addr}"),
        stop: Some(stop_tx),
        task,
        batches,
    }
}

/// One model worker.
fn policy(max_batch: usize, queue_capacity: usize) -> BatchPolicy {
    workers_policy(1, max_batch, queue_capacity)
}

fn workers_policy(workers: usize, max_batch: usize, queue_capacity: usize) -> BatchPolicy {
    BatchPolicy {
        max_batch,
        max_delay: Duration::from_millis(5),
        queue_capacity,
        poll: Duration::from_micros(200),
        layout: WorkerLayout::new(workers, 2),
    }
}

fn digit_form() -> Form {
    let png = encode_digit(&test_digits(1)[0], 1, ImageFormat::Png);
    Form::new().part("image", Part::bytes(png).file_name("d.png"))
}

async fn predict(base: impl AsRef<str>) -> reqwest::Response {
    let base = base.as_ref();
    reqwest::Client::new()
        .post(format!("{base}/"))
        .multipart(digit_form())
        .send()
        .await
        .unwrap()
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::get(format!("{base}/health")).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `/health` is 503 while the model loads, 200 once loaded and warmed up; predict waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_once_the_model_is_loaded() {
    let (gate_tx, gate_rx) = std::sync::mpsc::channel();
    let s = start(Duration::ZERO, policy(8, 64), Duration::from_secs(5), Some(gate_rx)).await;
    let r = reqwest::get(format!("{}/health", s.base)).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "LOADING");
    let r = predict(&s.base).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error_code"], "KILN.503");
    gate_tx.send(()).unwrap();
    wait_ready(&s.base).await;
    let r = predict(&s.base).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([{ "image": 3 }])
    );
    // The warm-up pass ran before readiness: one batch of 1, then the request.
    assert_eq!(*s.batches.lock().unwrap(), vec![1, 1]);
}

/// Concurrent requests are grouped into shared forward passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_forward_passes() {
    let s = start(
        Duration::from_millis(30),
        policy(16, 256),
        Duration::from_secs(10),
        None,
    )
    .await;
    wait_ready(&s.base).await;
    let requests: Vec<_> = (0..24).map(|_| tokio::spawn(predict_owned(s.base.clone()))).collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    let batches = s.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 25, "{batches:?}"); // 24 + warm-up
    assert!(batches.iter().any(|&n| n > 1), "no batching happened: {batches:?}");
    assert!(batches.iter().all(|&n| n <= 16), "{batches:?}");
}

/// With two workers, two batches run at the same time on the one shared model: four
/// single-image batches of 300 ms take about two passes' time, not four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_two_batches_at_once() {
    let delay = Duration::from_millis(300);
    let s = start(delay, workers_policy(2, 1, 16), Duration::from_secs(10), None).await;
    wait_ready(&s.base).await;
    let started = Instant::now();
    let requests: Vec<_> = (0..4).map(|_| tokio::spawn(predict_owned(s.base.clone()))).collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    let took = started.elapsed();
    assert!(took >= 2 * delay, "faster than two rounds of two: {took:?}");
    assert!(took < 3 * delay, "the batches did not overlap: {took:?}");
    assert_eq!(*s.batches.lock().unwrap(), vec![1; 5]); // 4 + warm-up
}

async fn predict_owned(base: String) -> u16 {
    predict(&base).await.status().as_u16()
}

/// A full queue answers 429 instead of growing without bound, with a `Retry-After` of the
/// time the queue takes to drain at the measured rate (at least a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429() {
    let s = start(Duration::from_millis(200), policy(1, 2), Duration::from_secs(20), None).await;
    wait_ready(&s.base).await;
    // Two batches measure the drain rate (one image per 200 ms).
    for _ in 0..2 {
        assert_eq!(predict(&s.base).await.status(), 200);
    }
    let requests: Vec<_> = (0..12).map(|_| tokio::spawn(predict(s.base.clone()))).collect();
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for r in requests {
        let r = r.await.unwrap();
        statuses.push(r.status().as_u16());
        if let Some(v) = r.headers().get("retry-after") {
            retry_after.push(v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert!(statuses.contains(&429) && statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    // A full queue of 2 (plus the refused image) at 5 images/s: about a second.
    assert_eq!(retry_after.len(), statuses.iter().filter(|s| **s == 429).count());
    assert!(retry_after.iter().all(|&s| (1..=3).contains(&s)), "{retry_after:?}");
}

/// A request whose own deadline (`X-Request-Timeout-Ms`) passes while it waits in the queue
/// is dropped before batching, unrun, and answered 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_dropped_unrun() {
    let s = start(Duration::from_millis(400), policy(1, 16), Duration::from_secs(20), None).await;
    wait_ready(&s.base).await;
    s.batches.lock().unwrap().clear();
    // Keeps the one worker busy for 400 ms.
    let busy = tokio::spawn(predict(s.base.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = reqwest::Client::new()
        .post(format!("{}/", s.base))
        .header("X-Request-Timeout-Ms", "100")
        .multipart(digit_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(busy.await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*s.batches.lock().unwrap(), vec![1], "the expired image never ran");
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kiln_expired_images_total 1"), "{metrics}");
    let r = reqwest::Client::new()
        .post(format!("{}/", s.base))
        .header("X-Request-Timeout-Ms", "soon")
        .multipart(digit_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A request past the deadline answers 504 with the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_answer_504() {
    let s = start(
        Duration::from_millis(800),
        policy(4, 16),
        Duration::from_millis(300),
        None,
    )
    .await;
    // Readiness waits for the warm-up pass (800 ms).
    wait_ready(&s.base).await;
    let started = Instant::now();
    let r = predict(&s.base).await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(700));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "KILN.504");
}

/// Shutdown stops accepting but lets in-flight requests finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let mut s = start(Duration::from_millis(400), policy(4, 16), Duration::from_secs(10), None).await;
    wait_ready(&s.base).await;
    let in_flight = tokio::spawn(predict_owned(s.base.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.take().unwrap().send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    s.task.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{}/health", s.base)).await.is_err(),
        "still accepting after shutdown"
    );
}

/// A request with more images than the queue can ever hold is refused as too large (a retry
/// could not succeed), and none of its images reaches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_images_than_the_queue_holds_is_413() {
    let s = start(Duration::ZERO, policy(4, 3), Duration::from_secs(5), None).await;
    wait_ready(&s.base).await;
    let png = encode_digit(&test_digits(1)[0], 1, ImageFormat::Png);
    let mut form = Form::new();
    for i in 0..4 {
        form = form.part("image", Part::bytes(png.clone()).file_name(format!("{i}.png")));
    }
    let r = reqwest::Client::new()
        .post(format!("{}/", s.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error_msg"].as_str().unwrap().contains("more than 3 images"),
        "{body}"
    );
    assert_eq!(*s.batches.lock().unwrap(), vec![1], "only the warm-up ran");
}

/// Sends raw bytes on a new connection and returns it.
async fn raw(base: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads what the server sends until it closes the connection (at most `limit`).
async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// A body that stops halfway is the client's fault: 408 at the deadline, with the JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_answers_408() {
    let s = start(Duration::ZERO, policy(4, 16), Duration::from_millis(400), None).await;
    wait_ready(&s.base).await;
    let head = "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\n\
                content-length: 1000\r\n\r\n--b\r\ncontent-disposition: form-data; name=\"image\"; \
                filename=\"a.png\"\r\n\r\nPNG";
    let started = Instant::now();
    let mut stream = raw(&s.base, head.as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("KILN.408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A connection that stops mid-header is closed after the header timeout, and does not hold
/// up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_closed_and_do_not_hold_shutdown() {
    let mut s = start_with(Duration::ZERO, policy(4, 16), Duration::from_secs(5), None, |c| {
        c.header_timeout = Duration::from_millis(300);
        c.drain = Duration::from_secs(30);
    })
    .await;
    wait_ready(&s.base).await;
    let mut stalled = raw(&s.base, b"GET /health HTTP/1.1\r\nhost: x\r\nx-half: ").await;
    assert!(
        read_to_close(&mut stalled, Duration::from_secs(3)).await.is_some(),
        "the stalled connection was not closed"
    );
    // Another one, open when shutdown begins: shutdown does not wait the 30 s drain for it.
    let _open = raw(&s.base, b"GET /health HTTP/1.1\r\nhost: x\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    s.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("shutdown finished")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// Past the connection cap a new connection reads a JSON 503 and is closed, and the ones
/// already open still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503() {
    let s = start_with(Duration::ZERO, policy(4, 16), Duration::from_secs(5), None, |c| {
        c.max_connections = 3;
    })
    .await;
    wait_ready(&s.base).await;
    // reqwest's pooled connection from wait_ready may still be open: fill up to the cap.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let mut stream = raw(&s.base, b"").await;
        if let Some(answer) = read_to_close(&mut stream, Duration::from_millis(300)).await {
            refused = Some(answer);
            break;
        }
        held.push(stream);
    }
    let answer = refused.expect("a connection past the cap was refused");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("KILN.503"), "{answer}");
    // Closing one frees a place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stream = raw(&s.base, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let answer = read_to_close(&mut stream, Duration::from_secs(3)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A model that panics on its warm-up input is refused at load with the panic's message, and
/// `/health` never turns OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_run_is_refused_at_load() {
    struct Broken;
    impl ImageModel for Broken {
        fn predict(&self, _: Vec<f32>, _: usize) -> Vec<Prediction> {
            panic!("shapes do not fit: [1, 3, 32, 32] into a 28x28 network")
        }
    }
    struct NotFinite;
    impl ImageModel for NotFinite {
        fn predict(&self, _: Vec<f32>, n: usize) -> Vec<Prediction> {
            vec![Prediction::Classes(vec![f32::NAN; 10]); n]
        }
    }
    let models: [(Box<dyn ImageModel>, &str); 2] = [
        (Box::new(Broken), "shapes do not fit"),
        (Box::new(NotFinite), "non-finite"),
    ];
    for (model, cause) in models {
        let config = ServeConfig {
            model_dir: "unused".into(),
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: TlsMode::Off,
            policy: policy(4, 16),
            max_body: 1_000_000,
            max_pixels: 1_000_000,
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            unready_grace: Duration::ZERO,
            decode_memory: 1 << 20,
            decode_slots: 1,
            header_timeout: Duration::from_secs(1),
            max_connections: 10,
            device: "cpu".into(),
        };
        let package = kiln_models::net_package_config(&kiln_models::NetConfig::new());
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            serve(config, package, move || Ok(model), |_, _| {}, std::future::pending()),
        )
        .await
        .expect("the server stopped");
        match result {
            Err(ServeError::ModelLoad(e)) => assert!(e.contains(cause), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Requests the HTTP library refuses before any route sees them (a malformed request line,
/// an over-long target, over-large headers) still get the JSON body and security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_get_the_json_body() {
    let s = start(Duration::ZERO, policy(4, 16), Duration::from_secs(5), None).await;
    wait_ready(&s.base).await;
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    // Too many headers rather than too many bytes: the whole request is read, so closing the
    // connection cannot reset it before the answer arrives.
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big_headers = format!("GET /health HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let cases = [
        ("GET / HTTP/1.1\r\nhost x\r\n\r\n".to_string(), "400"),
        (long_target, "414"),
        (big_headers, "431"),
    ];
    for (request, status) in cases {
        let mut stream = raw(&s.base, request.as_bytes()).await;
        let answer = read_to_close(&mut stream, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(
            answer.contains(&format!("\"error_code\":\"KILN.{status}\"")),
            "{answer}"
        );
        assert!(answer.contains("x-content-type-options: nosniff"), "{answer}");
    }
    // The server still answers.
    let health = reqwest::get(format!("{}/health", s.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}
