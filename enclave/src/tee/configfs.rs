//! Evidence from real hardware through Linux's configfs-tsm interface
//! (`Documentation/ABI/testing/configfs-tsm`): create a report entry under
//! `/sys/kernel/config/tsm/report`, write the 64 bytes of report data to
//! `inblob`, read the report (SEV-SNP) or quote (TDX) from `outblob` and,
//! for SEV-SNP, the host's certificate table from `auxblob`.
//!
//! `generation` counts writes to the entry; it must have advanced by exactly
//! our one write when the report has been read, or another process wrote
//! to the same entry in between and the report may answer its data.
//!
//! SEV-SNP guests without configfs-tsm use [`super::sev_guest`] instead.

use super::{snp_endorsements, RawEvidence, Tee, TeeError};
use sealtune_attestation::evidence::TeeKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the kernel mounts configfs-tsm report entries.
pub const DEFAULT_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// GUIDs of the SEV-SNP certificate table (GHCB specification), in the
/// byte order they are stored in (little-endian first three fields).
const GUID_VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]);
const GUID_VLEK: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1]);
const GUID_ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82]);
const GUID_ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae]);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// The configfs-tsm provider name of each TEE kind.
fn provider_of(tee: TeeKind) -> Result<&'static str, TeeError> {
    match tee {
        TeeKind::SevSnp => Ok("sev_guest"),
        TeeKind::Tdx => Ok("tdx_guest"),
        TeeKind::Sim => Err(TeeError::Unavailable("the simulated platform has no configfs-tsm provider".into())),
    }
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> TeeError + '_ {
    move |e| TeeError::Unavailable(format!("{}: {e}", what.display()))
}

/// A platform reached through configfs-tsm.
pub struct ConfigfsTsm {
    root: PathBuf,
    tee: TeeKind,
}

impl ConfigfsTsm {
    /// `root` is the report directory ([`DEFAULT_REPORT_ROOT`] on a real
    /// guest); `tee` is the kind the provider must be.
    pub fn new(root: impl Into<PathBuf>, tee: TeeKind) -> Self {
        ConfigfsTsm { root: root.into(), tee }
    }
}

impl Tee for ConfigfsTsm {
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = self.root.join(format!("sealtune-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        let result = ReportEntry::open(&dir).request(self.tee, report_data);
        // An entry left behind holds nothing secret; failing to remove it must
        // not turn a good report into an error.
        let _ = std::fs::remove_dir(&dir);
        result
    }
}

/// One configfs-tsm report entry (a directory the kernel populated).
pub struct ReportEntry {
    dir: PathBuf,
}

impl ReportEntry {
    /// An existing entry.
    pub fn open(dir: &Path) -> Self {
        ReportEntry { dir: dir.to_path_buf() }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, TeeError> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(io(&path))
    }

    fn generation(&self) -> Result<u64, TeeError> {
        let text = String::from_utf8(self.read("generation")?).unwrap_or_default();
        text.trim().parse().map_err(|_| TeeError::Unavailable(format!("generation {:?} is not a number", text.trim())))
    }

    /// Requests a report for `report_data` from a provider of kind `tee`.
    pub fn request(&self, tee: TeeKind, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError> {
        let expected = provider_of(tee)?;
        let provider = String::from_utf8_lossy(&self.read("provider")?).trim().to_string();
        if provider != expected {
            return Err(TeeError::WrongProvider { expected, found: provider });
        }
        let before = self.generation()?;
        let inblob = self.dir.join("inblob");
        std::fs::write(&inblob, report_data).map_err(io(&inblob))?;
        let report = self.read("outblob")?;
        let auxblob = match tee {
            TeeKind::SevSnp => match std::fs::read(self.dir.join("auxblob")) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io(&self.dir.join("auxblob"))(e)),
            },
            TeeKind::Tdx | TeeKind::Sim => Vec::new(),
        };
        let after = self.generation()?;
        if after != before + 1 {
            return Err(TeeError::Conflict { expected: before + 1, found: after });
        }
        let certs = if auxblob.is_empty() { Vec::new() } else { snp_cert_table(&auxblob)? };
        Ok(RawEvidence { tee, report, certs })
    }
}

/// Reads the SEV-SNP certificate table (GUID, offset, length entries up to
/// an all-zero one) into [`snp_endorsements`] order.
fn snp_cert_table(table: &[u8]) -> Result<Vec<Vec<u8>>, TeeError> {
    let bad = |why: &str| TeeError::CertTable(why.to_string());
    let mut found: Vec<([u8; 16], Vec<u8>)> = Vec::new();
    for entry in table.chunks(24) {
        let entry: &[u8; 24] = entry.try_into().map_err(|_| bad("table ends inside an entry"))?;
        if entry.iter().all(|&b| b == 0) {
            let get = |g: [u8; 16]| found.iter().find(|(id, _)| *id == g).map(|(_, c)| c.clone());
            return Ok(snp_endorsements(get(GUID_VCEK).or_else(|| get(GUID_VLEK)), get(GUID_ASK), get(GUID_ARK)));
        }
        let offset = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes")) as usize;
        let cert = offset.checked_add(len).and_then(|end| table.get(offset..end)).ok_or_else(|| bad("entry points outside the table"))?;
        found.push((entry[..16].try_into().expect("16 bytes"), cert.to_vec()));
    }
    Err(bad("no terminating zero entry"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mkfifo(path: &Path) {
        assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    /// A report entry as the kernel lays it out, with `inblob` and `outblob`
    /// as FIFOs so that a "kernel" thread answers the write like the driver:
    /// it reads the report data, advances `generation` by `bump` and only
    /// then serves `outblob`.
    fn fake_entry(dir: &Path, provider: &str, auxblob: Option<&[u8]>, bump: u64) -> std::thread::JoinHandle<Vec<u8>> {
        std::fs::write(dir.join("provider"), format!("{provider}\n")).unwrap();
        std::fs::write(dir.join("generation"), "7\n").unwrap();
        if let Some(aux) = auxblob {
            std::fs::write(dir.join("auxblob"), aux).unwrap();
        }
        mkfifo(&dir.join("inblob"));
        mkfifo(&dir.join("outblob"));
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let inblob = std::fs::read(dir.join("inblob")).unwrap();
            std::fs::write(dir.join("generation"), format!("{}\n", 7 + bump)).unwrap();
            let mut report = b"REPORT:".to_vec();
            report.extend_from_slice(&inblob);
            std::fs::write(dir.join("outblob"), &report).unwrap();
            inblob
        })
    }

    fn table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let header = 24 * (entries.len() + 1);
        let mut out = Vec::new();
        let mut body = Vec::new();
        for (id, cert) in entries {
            out.extend_from_slice(id);
            out.extend_from_slice(&((header + body.len()) as u32).to_le_bytes());
            out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
            body.extend_from_slice(cert);
        }
        out.extend_from_slice(&[0; 24]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn snp_report_and_certificate_table_come_from_the_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let aux = table(&[(GUID_ARK, b"ark"), (GUID_VCEK, b"vcek"), (GUID_ASK, b"ask")]);
        let kernel = fake_entry(tmp.path(), "sev_guest", Some(&aux), 1);
        let evidence = ReportEntry::open(tmp.path()).request(TeeKind::SevSnp, &[0x42; 64]).unwrap();
        assert_eq!(kernel.join().unwrap(), [0x42; 64]);
        assert_eq!(evidence.tee, TeeKind::SevSnp);
        assert_eq!(&evidence.report[..7], b"REPORT:");
        assert_eq!(&evidence.report[7..], [0x42; 64]);
        assert_eq!(evidence.certs, [b"vcek".to_vec(), b"ask".to_vec(), b"ark".to_vec()]);
    }

    #[test]
    fn tdx_quote_has_no_certificates_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = fake_entry(tmp.path(), "tdx_guest", None, 1);
        let evidence = ReportEntry::open(tmp.path()).request(TeeKind::Tdx, &[7; 64]).unwrap();
        kernel.join().unwrap();
        assert_eq!((evidence.tee, evidence.certs.len()), (TeeKind::Tdx, 0));
    }

    #[test]
    fn a_concurrent_write_is_detected_by_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = fake_entry(tmp.path(), "tdx_guest", None, 2);
        let err = ReportEntry::open(tmp.path()).request(TeeKind::Tdx, &[7; 64]).err().unwrap();
        kernel.join().unwrap();
        assert!(matches!(err, TeeError::Conflict { expected: 8, found: 9 }), "{err}");
    }

    #[test]
    fn another_providers_entry_is_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("provider"), "tdx_guest\n").unwrap();
        let err = ReportEntry::open(tmp.path()).request(TeeKind::SevSnp, &[0; 64]).err().unwrap();
        assert!(matches!(err, TeeError::WrongProvider { expected: "sev_guest", .. }), "{err}");
        assert!(!tmp.path().join("inblob").exists());
    }

    #[test]
    fn a_directory_that_is_not_configfs_tsm_is_unavailable_and_left_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ConfigfsTsm::new(tmp.path(), TeeKind::SevSnp).attest(&[0; 64]).err().unwrap();
        assert!(matches!(err, TeeError::Unavailable(ref m) if m.contains("provider")), "{err}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let missing = ConfigfsTsm::new(tmp.path().join("absent"), TeeKind::Tdx).attest(&[0; 64]).err().unwrap();
        assert!(matches!(missing, TeeError::Unavailable(_)));
    }

    #[test]
    fn malformed_certificate_tables_are_refused() {
        assert!(matches!(snp_cert_table(&[1; 30]), Err(TeeError::CertTable(_))));
        let mut bad = table(&[(GUID_VCEK, b"vcek")]);
        bad[20] = 0xff;
        assert!(matches!(snp_cert_table(&bad), Err(TeeError::CertTable(_))));
        assert_eq!(snp_cert_table(&table(&[(GUID_ASK, b"ask")])).unwrap(), Vec::<Vec<u8>>::new());
    }
}
