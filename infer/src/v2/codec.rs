//! The Open Inference Protocol's (KServe v2, Triton HTTP/REST) inference bodies: the JSON
//! request and response, and the binary tensor data extension (a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary tensor's raw bytes in order;
//! `BYTES` elements as a 4-byte little-endian length and the bytes).
//!
//! kiln's inputs: encoded image files as `BYTES` (raw in the binary extension, base64 strings
//! in JSON) or an already preprocessed `FP32` tensor `[N, C, H, W]`.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A request kiln cannot use: 400 with the protocol's `{"error": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// One input tensor's data.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    /// `BYTES`: one encoded image per element.
    Bytes(Vec<Vec<u8>>),
    /// `FP32`: preprocessed model inputs, row-major.
    F32(Vec<f32>),
}

/// One input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements.
    pub data: InputData,
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// The inputs, in request order.
    pub inputs: Vec<Input>,
    /// The outputs asked for (all when empty), with whether each comes back as binary data.
    pub outputs: Vec<(String, bool)>,
    /// `parameters.binary_data_output`: outputs not listed come back as binary data.
    pub binary_by_default: bool,
    /// `parameters.timeout` (Triton's, in microseconds): the request's deadline from arrival.
    pub timeout: Option<std::time::Duration>,
}

#[derive(Deserialize)]
struct RawRequest {
    id: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
struct RawInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Parses a request body; `header_len` is `Inference-Header-Content-Length` when the binary
/// extension is used (the JSON is the body's first `header_len` bytes).
pub fn parse_request(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, BadRequest> {
    let bad = |msg: String| BadRequest(msg);
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length {json_len} is more than the body's {} bytes",
            body.len()
        )));
    }
    let (header, mut binary) = body.split_at(json_len);
    let raw: RawRequest =
        serde_json::from_slice(header).map_err(|e| bad(format!("the request is not the protocol's JSON: {e}")))?;
    if raw.inputs.is_empty() {
        return Err(bad("the request has no inputs".into()));
    }
    let mut inputs = Vec::with_capacity(raw.inputs.len());
    for input in raw.inputs {
        let name = input.name.clone();
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| {
                    bad(format!(
                        "input {name:?}: shape {:?} has a negative dimension",
                        input.shape
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let elements: usize = shape.iter().product();
        let binary_size = input.parameters.get("binary_data_size").map(|v| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("input {name:?}: binary_data_size {v} is not a byte count")))
        });
        let data = match (binary_size.transpose()?, input.data) {
            (Some(size), _) => {
                if size > binary.len() {
                    return Err(bad(format!(
                        "input {name:?}: binary_data_size {size} is more than the {} bytes left in the body",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                binary_input(&name, &input.datatype, mine, elements)?
            }
            (None, Some(values)) => json_input(&name, &input.datatype, values, elements)?,
            (None, None) => return Err(bad(format!("input {name:?} has neither data nor binary_data_size"))),
        };
        inputs.push(Input { name, shape, data });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes after the last binary input are not claimed by any binary_data_size",
            binary.len()
        )));
    }
    let binary_by_default = raw
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let timeout = raw
        .parameters
        .get("timeout")
        .map(|v| {
            v.as_u64()
                .map(std::time::Duration::from_micros)
                .ok_or_else(|| bad(format!("parameters.timeout {v} is not a whole number of microseconds")))
        })
        .transpose()?;
    let outputs = raw
        .outputs
        .into_iter()
        .map(|o| {
            let binary = o
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(binary_by_default);
            (o.name, binary)
        })
        .collect();
    Ok(InferRequest {
        id: raw.id.map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        inputs,
        outputs,
        binary_by_default,
        timeout,
    })
}

/// An input sent as binary data.
fn binary_input(name: &str, datatype: &str, bytes: &[u8], elements: usize) -> Result<InputData, BadRequest> {
    let bad = |msg: String| BadRequest(format!("input {name:?}: {msg}"));
    match datatype {
        "BYTES" => {
            let mut items = Vec::with_capacity(elements);
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(bad("a BYTES element's 4-byte length is cut off".into()));
                }
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len > rest.len() - 4 {
                    return Err(bad(format!(
                        "a BYTES element says {len} bytes but {} are left",
                        rest.len() - 4
                    )));
                }
                items.push(rest[4..4 + len].to_vec());
                rest = &rest[4 + len..];
            }
            check_count(name, items.len(), elements)?;
            Ok(InputData::Bytes(items))
        }
        "FP32" => {
            if bytes.len() != elements * 4 {
                return Err(bad(format!(
                    "{} bytes of FP32 data for a shape of {elements} elements",
                    bytes.len()
                )));
            }
            Ok(InputData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ))
        }
        other => Err(bad(format!(
            "datatype {other} is not one kiln takes (BYTES images or FP32 inputs)"
        ))),
    }
}

/// An input sent as JSON data (nested lists are flattened, as the protocol allows).
fn json_input(name: &str, datatype: &str, values: Value, elements: usize) -> Result<InputData, BadRequest> {
    let bad = |msg: String| BadRequest(format!("input {name:?}: {msg}"));
    let mut flat = Vec::new();
    flatten(values, &mut flat);
    check_count(name, flat.len(), elements)?;
    match datatype {
        "BYTES" => flat
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|e| {
                    bad(format!(
                        "element {i} is not base64 (JSON carries images as base64 strings): {e}"
                    ))
                }),
                other => Err(bad(format!("element {i} is {other}, not a base64 string"))),
            })
            .collect::<Result<_, _>>()
            .map(InputData::Bytes),
        "FP32" => flat
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| bad(format!("element {i} is {v}, not a number")))
            })
            .collect::<Result<_, _>>()
            .map(InputData::F32),
        other => Err(bad(format!(
            "datatype {other} is not one kiln takes (BYTES images or FP32 inputs)"
        ))),
    }
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn check_count(name: &str, got: usize, shape_elements: usize) -> Result<(), BadRequest> {
    if got == shape_elements {
        Ok(())
    } else {
        Err(BadRequest(format!(
            "input {name:?}: {got} elements for a shape of {shape_elements}"
        )))
    }
}

/// One output tensor of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements.
    pub data: OutputData,
}

/// An output's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    /// `FP32`.
    F32(Vec<f32>),
    /// `INT32`.
    I32(Vec<i32>),
    /// `BYTES` (text).
    Text(Vec<String>),
}

impl OutputData {
    fn datatype(&self) -> &'static str {
        match self {
            Self::F32(_) => "FP32",
            Self::I32(_) => "INT32",
            Self::Text(_) => "BYTES",
        }
    }

    fn json(&self) -> Value {
        match self {
            Self::F32(v) => v.iter().map(|&x| json!(x)).collect(),
            Self::I32(v) => v.iter().map(|&x| json!(x)).collect(),
            Self::Text(v) => v.iter().map(|x| json!(x)).collect(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Text(v) => v
                .iter()
                .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                .collect(),
        }
    }
}

/// The response body for `outputs` (those `request` asks for, all when it names none) and,
/// when any goes out as binary data, the JSON header's length for
/// `Inference-Header-Content-Length`. An asked-for output the model has not is an error.
pub fn encode_response(
    model: &str,
    version: &str,
    request: &InferRequest,
    outputs: Vec<Output>,
) -> Result<(Vec<u8>, Option<usize>), BadRequest> {
    let chosen: Vec<(Output, bool)> = if request.outputs.is_empty() {
        outputs.into_iter().map(|o| (o, request.binary_by_default)).collect()
    } else {
        let mut by_name: Vec<Option<Output>> = outputs.into_iter().map(Some).collect();
        request
            .outputs
            .iter()
            .map(|(name, binary)| {
                let slot = by_name.iter_mut().find(|o| o.as_ref().is_some_and(|o| &o.name == name));
                match slot.and_then(Option::take) {
                    Some(o) => Ok((o, *binary)),
                    None => Err(BadRequest(format!("the model has no output {name:?}"))),
                }
            })
            .collect::<Result<_, _>>()?
    };
    let mut binary = Vec::new();
    let tensors: Vec<Value> = chosen
        .iter()
        .map(|(o, as_binary)| {
            let mut t = json!({ "name": o.name, "datatype": o.data.datatype(), "shape": o.shape });
            if *as_binary {
                let bytes = o.data.bytes();
                t["parameters"] = json!({ "binary_data_size": bytes.len() });
                binary.extend(bytes);
            } else {
                t["data"] = o.data.json();
            }
            t
        })
        .collect();
    let mut body = json!({ "model_name": model, "model_version": version, "outputs": tensors });
    if let Some(id) = &request.id {
        body["id"] = json!(id);
    }
    let mut bytes = serde_json::to_vec(&body).expect("JSON serialises");
    if chosen.iter().any(|(_, b)| *b) {
        let header = bytes.len();
        bytes.extend(binary);
        Ok((bytes, Some(header)))
    } else {
        Ok((bytes, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_element(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn json_requests_carry_images_as_base64_and_inputs_as_numbers() {
        let body = json!({
            "id": "r1",
            "inputs": [
                {"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AAEC", "/w=="]},
                {"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, -1]]}
            ],
            "outputs": [{"name": "label"}]
        });
        let r = parse_request(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].data, InputData::Bytes(vec![vec![0, 1, 2], vec![255]]));
        assert_eq!(r.inputs[1].data, InputData::F32(vec![0.5, -1.0]));
        assert_eq!(r.inputs[1].shape, [1, 2]);
        assert_eq!(r.outputs, [("label".to_string(), false)]);
        assert_eq!(r.timeout, None);
        let timed = json!({"parameters": {"timeout": 250_000}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
        let r = parse_request(timed.to_string().as_bytes(), None).unwrap();
        assert_eq!(r.timeout, Some(std::time::Duration::from_millis(250)));
    }

    #[test]
    fn binary_requests_split_the_body_after_the_json_header() {
        let header = json!({
            "inputs": [
                {"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
                {"name": "input", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
            ],
            "parameters": {"binary_data_output": true}
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(bytes_element(b"png"));
        body.extend(bytes_element(b""));
        body.extend(1.5f32.to_le_bytes());
        body.extend((-2f32).to_le_bytes());
        // 7 + 4 = 11 bytes of BYTES elements.
        let r = parse_request(&body, Some(header.len())).unwrap();
        assert_eq!(r.inputs[0].data, InputData::Bytes(vec![b"png".to_vec(), vec![]]));
        assert_eq!(r.inputs[1].data, InputData::F32(vec![1.5, -2.0]));
        assert!(r.binary_by_default);
    }

    #[test]
    fn malformed_requests_name_the_input_and_the_problem() {
        let cases = [
            (json!({"inputs": []}), "no inputs"),
            (
                json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AA=="]}]}),
                "1 elements for a shape of 2",
            ),
            (
                json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}),
                "not base64",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}),
                "INT8",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}),
                "negative",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}),
                "neither data",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}),
                "bytes left",
            ),
        ];
        for (body, needle) in cases {
            let e = parse_request(body.to_string().as_bytes(), None).unwrap_err();
            assert!(e.0.contains(needle), "{body}: {}", e.0);
        }
        let bad_timeout = json!({"parameters": {"timeout": "soon"}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
        let e = parse_request(bad_timeout.to_string().as_bytes(), None).unwrap_err();
        assert!(e.0.contains("parameters.timeout"), "{}", e.0);
        let e = parse_request(b"{", None).unwrap_err();
        assert!(e.0.contains("JSON"), "{}", e.0);
        let e = parse_request(b"{}", Some(10)).unwrap_err();
        assert!(e.0.contains("Inference-Header-Content-Length"), "{}", e.0);
        // A cut-off BYTES element.
        let header = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}).to_string();
        let mut body = header.clone().into_bytes();
        body.extend([9, 0, 0, 0, 1, 2]);
        let e = parse_request(&body, Some(header.len())).unwrap_err();
        assert!(e.0.contains("says 9 bytes"), "{}", e.0);
    }

    #[test]
    fn responses_put_binary_outputs_after_the_json() {
        let request = InferRequest {
            id: Some("7".into()),
            inputs: Vec::new(),
            outputs: vec![("label".into(), false), ("probabilities".into(), true)],
            binary_by_default: false,
            timeout: None,
        };
        let outputs = vec![
            Output {
                name: "probabilities".into(),
                shape: vec![1, 2],
                data: OutputData::F32(vec![0.25, 0.75]),
            },
            Output {
                name: "label".into(),
                shape: vec![1],
                data: OutputData::Text(vec!["dog".into()]),
            },
        ];
        let (body, header) = encode_response("model", "1", &request, outputs.clone()).unwrap();
        let header = header.unwrap();
        let json: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["id"], "7");
        assert_eq!(json["outputs"][0]["name"], "label");
        assert_eq!(json["outputs"][0]["data"], json!(["dog"]));
        assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 8);
        let tail: Vec<f32> = body[header..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(tail, [0.25, 0.75]);

        let all_json = InferRequest {
            outputs: Vec::new(),
            ..request.clone()
        };
        let (body, header) = encode_response("model", "1", &all_json, outputs.clone()).unwrap();
        assert_eq!(header, None);
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["outputs"][0]["data"], json!([0.25, 0.75]));
        let missing = InferRequest {
            outputs: vec![("boxes".into(), false)],
            ..request
        };
        let e = encode_response("model", "1", &missing, outputs).unwrap_err();
        assert!(e.0.contains("\"boxes\""), "{}", e.0);
    }
}
