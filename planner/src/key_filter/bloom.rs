//! The Bloom filter of a build task's keys (see the parent module).

use datafusion::arrow::array::ArrayRef;
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::{Result, internal_err};
use datafusion::physical_plan::joins::SeededRandomState;

use super::BLOOM_LOG2;

/// Hashes keys for the Bloom filters, the same in every process (a seed of its own, not
/// the hash exchanges').
const BLOOM_HASH: SeededRandomState = SeededRandomState::with_seed(0x6b65_7973);

/// A Bloom filter of `64 * words.len()` bits (a power of two), three bits per key.
#[derive(Debug, Clone)]
pub(super) struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    pub(super) fn new(log2: u8) -> Self {
        Self {
            words: vec![0; (1usize << log2.clamp(BLOOM_LOG2.0, BLOOM_LOG2.1)) / 64],
        }
    }

    /// A filter of `bytes` (as [`Self::to_bytes`] wrote them).
    pub(super) fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let sizes = (1usize << BLOOM_LOG2.0) / 8..=(1usize << BLOOM_LOG2.1) / 8;
        if !bytes.len().is_power_of_two() || !sizes.contains(&bytes.len()) {
            return internal_err!("a key summary's Bloom filter of {} bytes", bytes.len());
        }
        let mut bloom = Self {
            words: vec![0; bytes.len() / 8],
        };
        bloom.union_bytes(bytes)?;
        Ok(bloom)
    }

    fn bits(&self, hash: u64) -> [usize; 3] {
        let mask = (self.words.len() * 64 - 1) as u64;
        let step = hash.rotate_left(21) | 1;
        [0u64, 1, 2].map(|i| (hash.wrapping_add(i.wrapping_mul(step)) & mask) as usize)
    }

    pub(super) fn insert(&mut self, hash: u64) {
        for bit in self.bits(hash) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    pub(super) fn contains(&self, hash: u64) -> bool {
        self.bits(hash)
            .iter()
            .all(|&bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Adds the keys of another filter of the same size (`bytes` as [`Self::to_bytes`]).
    pub(super) fn union_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != self.words.len() * 8 {
            return internal_err!(
                "Bloom filters of {} and {} bytes",
                bytes.len(),
                self.words.len() * 8
            );
        }
        for (word, chunk) in self.words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *word |= u64::from_le_bytes(le);
        }
        Ok(())
    }
}

/// The hashes of the rows of `columns` (the keys).
pub(super) fn key_hashes(columns: &[ArrayRef], rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0; rows];
    create_hashes(columns, BLOOM_HASH.random_state(), &mut hashes)?;
    Ok(hashes)
}
