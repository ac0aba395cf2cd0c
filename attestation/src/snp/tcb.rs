//! TCB_VERSION: the security patch levels of the firmware components, packed
//! into 64 bits. The byte layout differs by CPU generation: Milan and Genoa
//! put the SNP firmware SPL in byte 6, Turin adds an FMC SPL in byte 0 and
//! moves the others down.

use serde::{Deserialize, Serialize};

/// The AMD EPYC generation a chain or report belongs to; it fixes the TCB layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// 3rd generation EPYC.
    Milan,
    /// 4th generation EPYC.
    Genoa,
    /// 5th generation EPYC.
    Turin,
}

impl Product {
    /// The name AMD uses in certificate subjects (`ARK-Milan`, `SEV-Milan`).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

/// A raw TCB_VERSION value as found in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion(pub u64);

/// The component SPLs of a TCB_VERSION, decoded for one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tcb {
    /// Firmware mask ROM SPL (Turin and later; 0 before).
    #[serde(default)]
    pub fmc: u8,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the SPLs with the layout of `product`.
    pub fn decode(self, product: Product) -> Tcb {
        let b = self.0.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => Tcb { fmc: 0, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] },
            Product::Turin => Tcb { fmc: b[0], bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] },
        }
    }
}

impl Tcb {
    /// Encodes the SPLs with the layout of `product`.
    pub fn encode(self, product: Product) -> TcbVersion {
        let mut b = [0u8; 8];
        match product {
            Product::Milan | Product::Genoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            Product::Turin => {
                b[0] = self.fmc;
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        TcbVersion(u64::from_le_bytes(b))
    }

    /// True when every component of `self` is at least that of `minimum`.
    pub fn meets(&self, minimum: &Tcb) -> bool {
        self.fmc >= minimum.fmc
            && self.bootloader >= minimum.bootloader
            && self.tee >= minimum.tee
            && self.snp >= minimum.snp
            && self.microcode >= minimum.microcode
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fmc={} bootloader={} tee={} snp={} microcode={}",
            self.fmc, self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_layout_matches_published_vector() {
        // virtee/sev Milan report: REPORTED_TCB raw 0300000000000873 (LE bytes)
        // = bl 3, tee 0, snp 8, ucode 0x73 (PROVENANCE.md of that vector).
        let raw = u64::from_le_bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x73]);
        let tcb = TcbVersion(raw).decode(Product::Milan);
        assert_eq!(tcb, Tcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 });
        assert_eq!(tcb.encode(Product::Milan), TcbVersion(raw));
    }

    #[test]
    fn meets_is_componentwise() {
        let t = Tcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 };
        assert!(t.meets(&t));
        assert!(!t.meets(&Tcb { snp: 9, ..t }));
        assert!(!t.meets(&Tcb { microcode: 200, bootloader: 0, ..t }));
    }
}
