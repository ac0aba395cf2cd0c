//! The `sealtune` CLI as users run it: exit codes, messages, and files that
//! must never be left half-written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sealtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealtune")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const CORPUS: &str = "{\"text\":\"MARKER-alpha patient note\"}\n{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"user_id\":\"u7\"}\n";

fn seal_corpus(dir: &Path, corpus: &str) -> (PathBuf, PathBuf, Output) {
    let plain = dir.join("c.jsonl");
    std::fs::write(&plain, corpus).unwrap();
    let (sealed, dek) = (dir.join("c.sealed"), dir.join("c.dek"));
    let out = sealtune(&["owner", "seal", p(&plain), "--out", p(&sealed), "--dek-out", p(&dek)]);
    (sealed, dek, out)
}

#[test]
fn seal_then_open_round_trips_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (sealed, dek, out) = seal_corpus(dir.path(), CORPUS);
    assert!(out.status.success(), "{}", stderr(&out));
    let commitment = stdout(&out);
    assert_eq!(commitment.len(), 64);
    assert_eq!(std::fs::metadata(&dek).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&dek).unwrap().is_empty() && !stderr(&out).contains(&std::fs::read_to_string(&dek).unwrap()[16..]));

    let plain = dir.path().join("back.jsonl");
    let out = sealtune(&["owner", "open", p(&sealed), "--dek", p(&dek), "--out", p(&plain)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), CORPUS);

    let out = sealtune(&["owner", "inspect", p(&sealed), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["commitment"], commitment.as_str());
    assert_eq!(json["version"], 1);
}

#[test]
fn a_bad_line_is_reported_by_number_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (sealed, dek, out) = seal_corpus(dir.path(), "{\"text\":\"ok\"}\n{\"text\":\"ok\"}\n{\"text\": 5}\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    assert!(!sealed.exists() && !dek.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left behind");
}

#[test]
fn tampered_truncated_or_wrongly_keyed_input_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (sealed, dek, out) = seal_corpus(dir.path(), &"{\"text\":\"0123456789\"}\n".repeat(10_000));
    assert!(out.status.success());
    let bytes = std::fs::read(&sealed).unwrap();
    let plain = dir.path().join("out.jsonl");

    // 230 000 bytes of plaintext: chunks 0..=2 full (65 536 + 16 bytes), chunk 3 final.
    let start = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize + 32;
    let full = 65536 + 16;
    let mut flipped = bytes.clone();
    flipped[start + full + 10] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered", flipped, "tampered chunk 1"),
        ("cut inside the final chunk", bytes[..bytes.len() - 1000].to_vec(), "tampered chunk 3"),
        ("cut at a chunk boundary", bytes[..start + 2 * full].to_vec(), "truncated after chunk 1"),
        ("not sealed", b"{\"text\":\"x\"}\n".to_vec(), "not a sealed corpus"),
    ];
    for (name, input, message) in cases {
        let bad = dir.path().join("bad.sealed");
        std::fs::write(&bad, &input).unwrap();
        let out = sealtune(&["owner", "open", p(&bad), "--dek", p(&dek), "--out", p(&plain)]);
        assert!(!out.status.success(), "{name}");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert!(!plain.exists(), "{name}: output written");
    }
    let other_dek = dir.path().join("other.dek");
    std::fs::write(&other_dek, "sealtune-dek-v1:".to_string() + &"ab".repeat(32) + "\n").unwrap();
    let out = sealtune(&["owner", "open", p(&sealed), "--dek", p(&other_dek), "--out", p(&plain)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    assert!(!plain.exists());
}

#[test]
fn invalid_job_terms_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.bin");
    std::fs::write(&model, b"m").unwrap();
    let key = "ab".repeat(32);
    let identity = dir.path().join("vendor.key");
    assert!(sealtune(&["vendor", "keygen", "--out", p(&identity)]).status.success());
    let out = sealtune(&[
        "vendor", "job", "--model", p(&model), "--dataset", &format!("{key}:{key}"), "--identity", p(&identity),
        "--epsilon", "8", "--delta", "1.5", "--sampling-rate", "0.01", "--expected-batch", "4", "--max-steps", "10",
        "--out", p(&dir.path().join("job.cbor")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("privacy.delta"), "{}", stderr(&out));
    assert!(!dir.path().join("job.cbor").exists());
}

#[test]
fn dp_epsilon_and_calibrate_print_the_documented_json() {
    let out = sealtune(&["dp", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1", "--steps", "100", "--delta", "1e-5", "--accountant", "rdp", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("{\"accountant\":\"rdp\",\"q\":0.01,\"sigma\":1.1,\"steps\":100,\"delta\":"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps.is_finite());

    let out = sealtune(&["dp", "calibrate", "--sampling-rate", "0.01", "--steps", "100", "--delta", "1e-5", "--epsilon", &eps.to_string(), "--accountant", "rdp", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!((v["sigma"].as_f64().unwrap() / 1.1 - 1.0).abs() < 1e-3, "{v}");
    assert_eq!(v["accountant"], "rdp");
}

/// Large targets are legitimate; calibrating to them once grew past 6 GB.
/// Under a 1 GiB address-space limit each answers, with a σ that meets it.
#[test]
fn dp_calibrate_reaches_extreme_targets_within_one_gib() {
    for target in ["1000", "1000000"] {
        let command = format!(
            "ulimit -v 1048576 && exec {} dp calibrate --sampling-rate 0.123 --steps 40 --delta 9.9e-6 --epsilon {target} --json",
            env!("CARGO_BIN_EXE_sealtune")
        );
        let out = Command::new("sh").args(["-c", &command]).output().unwrap();
        assert!(out.status.success(), "ε = {target}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let sigma = v["sigma"].as_f64().unwrap();
        let out = sealtune(&["dp", "epsilon", "--sampling-rate", "0.123", "--noise-multiplier", &sigma.to_string(), "--steps", "40", "--delta", "9.9e-6", "--json"]);
        let eps = serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["epsilon"].as_f64().unwrap();
        assert!(eps <= target.parse::<f64>().unwrap(), "ε = {target}: σ = {sigma} gives {eps}");
    }
}

#[test]
fn dp_rejects_invalid_arguments_with_exit_2_naming_them() {
    for (args, flag) in [
        (["--sampling-rate", "0", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"], "--sampling-rate"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "-1", "--steps", "10", "--delta", "1e-5"], "--noise-multiplier"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "0", "--delta", "1e-5"], "--steps"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1"], "--delta"),
    ] {
        let mut all = vec!["dp", "epsilon"];
        all.extend(args);
        let out = sealtune(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
    let out = sealtune(&["dp", "calibrate", "--sampling-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--epsilon", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--epsilon"));
}
