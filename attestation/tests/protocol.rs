//! Golden bytes of the wire protocols (docs/formats/protocol.md, "Test
//! vectors"), and how decoders refuse what is not a message.

use sealtune_attestation::cbor::CborError;
use sealtune_attestation::protocol::{
    OutputBlob, Phase, ProtocolError, Request, Response, StoreRequest, StoreResponse, PROTOCOL_VERSION,
};

/// Each row is a test vector of the format doc: a message and its canonical CBOR.
const REQUESTS: &[&str] = &[
    "a16568656c6c6fa16776657273696f6e02",
    "a1696368616c6c656e6765a1656e6f6e63655820abababababababababababababababababababababababababababababababab",
    "a1656772616e74a1656772616e7443010203",
    "66737461747573",
    "a16d66657463685f6f757470757473a269726563697069656e7458205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a697369676e617475726558405b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b",
];

fn requests() -> [Request; 5] {
    [
        Request::Hello { version: PROTOCOL_VERSION },
        Request::Challenge { nonce: [0xab; 32] },
        Request::Grant { grant: vec![1, 2, 3] },
        Request::Status,
        Request::FetchOutputs { recipient: [0x5a; 32], signature: [0x5b; 64] },
    ]
}

const RESPONSES: &[&str] = &[
    "a16568656c6c6fa16776657273696f6e02",
    "a16865766964656e6365a16865766964656e636541ee",
    "a16e6772616e745f6163636570746564a167646174617365745820dadadadadadadadadadadadadadadadadadadadadadadadadadadadadadadada",
    "a16772656675736564a166726561736f6e626e6f",
    "a166737461747573a365706861736568747261696e696e67657374657073036d657073696c6f6e5f7370656e74f93800",
    "a1676f757470757473a26566696c657381a2646e616d656161656279746573410767726563656970744108",
    "a1656572726f72a1676d6573736167656165",
];

fn responses() -> [Response; 7] {
    [
        Response::Hello { version: PROTOCOL_VERSION },
        Response::Evidence { evidence: vec![0xee] },
        Response::GrantAccepted { dataset: [0xda; 32] },
        Response::Refused { reason: "no".into() },
        Response::Status { phase: Phase::Training, steps: 3, epsilon_spent: 0.5 },
        Response::Outputs { files: vec![OutputBlob { name: "a".into(), bytes: vec![7] }], receipt: vec![8] },
        Response::Error { message: "e".into() },
    ]
}

const STORE_REQUESTS: &[&str] = &[
    "a163707574a36776657273696f6e0166646967657374582011111111111111111111111111111111111111111111111111111111111111116473697a6505",
    "a163676574a26776657273696f6e016664696765737458201111111111111111111111111111111111111111111111111111111111111111",
];

fn store_requests() -> [StoreRequest; 2] {
    [StoreRequest::Put { version: 1, digest: [0x11; 32], size: 5 }, StoreRequest::Get { version: 1, digest: [0x11; 32] }]
}

const STORE_RESPONSES: &[&str] = &[
    "a16673746f726564a16664696765737458201111111111111111111111111111111111111111111111111111111111111111",
    "a165666f756e64a16473697a6505",
    "696e6f745f666f756e64",
    "a16772656675736564a166726561736f6e6172",
];

fn store_responses() -> [StoreResponse; 4] {
    [
        StoreResponse::Stored { digest: [0x11; 32] },
        StoreResponse::Found { size: 5 },
        StoreResponse::NotFound,
        StoreResponse::Refused { reason: "r".into() },
    ]
}

macro_rules! golden {
    ($name:ident, $messages:expr, $vectors:expr, $t:ty) => {
        #[test]
        fn $name() {
            let messages = $messages;
            assert_eq!(messages.len(), $vectors.len());
            for (message, golden) in messages.iter().zip($vectors) {
                assert_eq!(hex::encode(message.to_cbor()), *golden, "{message:?}");
                assert_eq!(&<$t>::from_cbor(&hex::decode(golden).unwrap()).unwrap(), message);
            }
        }
    };
}

golden!(request_golden_bytes, requests(), REQUESTS, Request);
golden!(response_golden_bytes, responses(), RESPONSES, Response);
golden!(store_request_golden_bytes, store_requests(), STORE_REQUESTS, StoreRequest);
golden!(store_response_golden_bytes, store_responses(), STORE_RESPONSES, StoreResponse);

fn request(hex_bytes: &str) -> Result<Request, ProtocolError> {
    Request::from_cbor(&hex::decode(hex_bytes).unwrap())
}

#[test]
fn an_unknown_message_is_named_as_such() {
    // "reboot", and {"shell": {"cmd": "id"}}
    let err = request("665265626f6f74").unwrap_err();
    assert!(matches!(&err, ProtocolError::UnknownMessage(name) if name == "Reboot"), "{err}");
    let err = request("a1657368656c6ca163636d64626964").unwrap_err();
    assert!(matches!(&err, ProtocolError::UnknownMessage(name) if name == "shell"), "{err}");
    // A response name is not a request.
    let err = request(RESPONSES[1]).unwrap_err();
    assert!(matches!(&err, ProtocolError::UnknownMessage(name) if name == "evidence"), "{err}");
    // A long name from the peer is cut short in the error.
    let long = serde_cbor_text(&"x".repeat(1000));
    let err = Request::from_cbor(&long).unwrap_err();
    assert!(err.to_string().len() < 200, "{err}");
}

fn serde_cbor_text(s: &str) -> Vec<u8> {
    sealtune_attestation::cbor::to_vec(&s)
}

#[test]
fn a_known_message_with_wrong_fields_is_malformed() {
    // {"challenge": {"nonce": h'abab'}}: a 2-byte nonce.
    let err = request("a1696368616c6c656e6765a1656e6f6e636542abab").unwrap_err();
    assert!(matches!(err, ProtocolError::MalformedFields { name: "challenge", .. }), "{err}");
    // {"hello": {}}: the version is missing.
    let err = request("a16568656c6c6fa0").unwrap_err();
    assert!(matches!(err, ProtocolError::MalformedFields { name: "hello", .. }), "{err}");
    // {"hello": {"version": 1}} with the version as a two-byte uint: not canonical.
    let err = request("a16568656c6c6fa16776657273696f6e1801").unwrap_err();
    assert!(matches!(err, ProtocolError::MalformedFields { reason: CborError::NonCanonical, .. }), "{err}");
}

#[test]
fn bytes_that_are_not_a_message_are_malformed() {
    for bad in ["", "ff", "01", "80", "a2616101616202", REQUESTS[0].trim_end_matches("02")] {
        let err = request(bad).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed(_)), "{bad}: {err}");
    }
    // Trailing bytes after a whole message.
    let err = request(&format!("{}00", REQUESTS[3])).unwrap_err();
    assert!(matches!(err, ProtocolError::Malformed(_)), "{err}");
}
