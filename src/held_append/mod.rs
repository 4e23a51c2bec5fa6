//! Where an APPEND waits while the node reads it whole (`proxy::read::read_append`): in
//! memory up to `limits.append_memory_bytes`, then on disk in `limits.append_spill_dir`, as
//! nginx keeps a body past `client_body_buffer_size`. Each place is capped per principal and
//! in total, and a body's place is given back with the last of its bytes, once its worker has
//! read them. When a cap is full, bodies that arrive too slowly give way (`give_way`).
//!
//! Memory is what every tenant's sessions share. Held there whole, a few clients sending large
//! APPENDs slowly pinned most of it for minutes at a time (a thirtieth review); on disk, the
//! same bodies cost a file each and page cache the kernel may evict.

mod give_way;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quackgate_spill::Spill;
use tokio_util::sync::CancellationToken;

use crate::limits::{ByteCapFull, ByteCaps, Held, LimitsConfig};
use give_way::{Place, Readers, Reading};

/// Spilled bytes are written in batches of this size, each on a blocking thread.
const WRITE_BATCH: usize = 256 * 1024;
/// The longest an APPEND waits for the room of bodies it cut to be let go.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// The caps of held APPENDs on this node, keyed by principal tag.
#[derive(Debug)]
pub struct HeldAppends(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    memory: Arc<ByteCaps<u32>>,
    disk: Arc<ByteCaps<u32>>,
    memory_each: u64,
    spill_dir: PathBuf,
    spilled: AtomicU64,
    readers: Readers,
}

/// What [`HeldAppends`] holds now, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeldReading {
    pub memory: u64,
    pub disk: u64,
    /// APPENDs held on disk since the start.
    pub spilled: u64,
}

/// Why an APPEND could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("holding the APPEND would pass {setting} ({limit} bytes)")]
    Full { limit: u64, setting: &'static str },
    /// Cut while the caps were full, for arriving slower than `rate` bytes a second
    /// (`limits.append_rate_under_pressure`).
    #[error("the APPEND arrived slower than {rate} bytes a second while the caps were full")]
    GaveWay { rate: u64 },
    #[error("writing the APPEND to limits.append_spill_dir: {0}")]
    Disk(#[from] std::io::Error),
}

impl HeldAppends {
    pub fn new(limits: &LimitsConfig) -> Self {
        HeldAppends(Arc::new(Shared {
            memory: Arc::new(ByteCaps::new(
                limits.max_held_append_bytes,
                limits.max_held_append_bytes_per_principal,
            )),
            disk: Arc::new(ByteCaps::new(
                limits.max_spilled_append_bytes,
                limits.max_spilled_append_bytes_per_principal,
            )),
            memory_each: limits.append_memory_bytes,
            spill_dir: limits.append_spill_dir.clone(),
            spilled: AtomicU64::new(0),
            readers: Readers::new(limits.append_rate_under_pressure),
        }))
    }

    pub fn reading(&self) -> HeldReading {
        HeldReading {
            memory: self.0.memory.total(),
            disk: self.0.disk.total(),
            spilled: self.0.spilled.load(Ordering::Relaxed),
        }
    }

    /// `bytes` more of memory for the principal tagged `key`, beyond a body: its walk's flat
    /// forms (`quack_codec::FlatAppend::held_bytes`), held until the result drops.
    ///
    /// # Errors
    /// The memory cap it would pass.
    pub fn hold_memory(&self, key: u32, bytes: u64) -> Result<Held<u32>, HoldError> {
        let mut held = self.0.memory.hold(key);
        held.grow(bytes).map_err(memory_full)?;
        Ok(held)
    }

    /// An empty body of the principal tagged `key`, being read.
    pub fn body(&self, key: u32) -> HeldBody {
        HeldBody {
            memory: BytesMut::new(),
            in_memory: Some(self.0.memory.hold(key)),
            disk: None,
            key,
            reading: self.0.readers.join(Instant::now()),
            shared: self.0.clone(),
        }
    }
}

/// An APPEND being held, piece by piece.
pub struct HeldBody {
    /// Bytes not yet on disk: the whole body until it spills, then the next batch.
    memory: BytesMut,
    /// Taken by [`HeldBody::finish`].
    in_memory: Option<Held<u32>>,
    disk: Option<OnDisk>,
    key: u32,
    reading: Arc<Reading>,
    shared: Arc<Shared>,
}

struct OnDisk {
    /// Out only while a blocking thread writes to it.
    spill: Option<Spill>,
    held: Held<u32>,
}

impl HeldBody {
    /// Cancelled once another APPEND, finding the caps full, has taken this one's room.
    pub fn cut(&self) -> CancellationToken {
        self.reading.cut().clone()
    }

    /// The error of a body that was [`HeldBody::cut`].
    pub fn gave_way(&self) -> HoldError {
        HoldError::GaveWay {
            rate: self.shared.readers.pressure_rate(),
        }
    }

    /// Holds `data` after what came before.
    ///
    /// # Errors
    /// A cap it would pass, or a failed write to disk; the body is then unusable.
    pub async fn push(&mut self, data: &[u8]) -> Result<(), HoldError> {
        let n = data.len() as u64;
        self.reading.received(n, Instant::now());
        let result = self.hold(data).await;
        self.reading.set_held(
            self.in_memory.as_ref().map_or(0, Held::bytes),
            self.disk.as_ref().map_or(0, |d| d.held.bytes()),
        );
        result
    }

    async fn hold(&mut self, data: &[u8]) -> Result<(), HoldError> {
        let n = data.len() as u64;
        let shared = self.shared.clone();
        let Some(in_memory) = &mut self.in_memory else {
            return Err(HoldError::Disk(std::io::Error::other(
                "the body is finished",
            )));
        };
        if self.disk.is_none() && self.memory.len() as u64 + n <= shared.memory_each {
            grow(&shared, &self.reading, in_memory, Place::Memory, n).await?;
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        let disk = match &mut self.disk {
            Some(disk) => disk,
            None => {
                let mut held = shared.disk.hold(self.key);
                let already = self.memory.len() as u64;
                grow(&shared, &self.reading, &mut held, Place::Disk, already).await?;
                let dir = shared.spill_dir.clone();
                let spill = tokio::task::spawn_blocking(move || Spill::new_in(&dir))
                    .await
                    .map_err(std::io::Error::other)??;
                shared.spilled.fetch_add(1, Ordering::Relaxed);
                self.disk.insert(OnDisk {
                    spill: Some(spill),
                    held,
                })
            }
        };
        grow(&shared, &self.reading, &mut disk.held, Place::Disk, n).await?;
        grow(&shared, &self.reading, in_memory, Place::Memory, n).await?;
        self.memory.extend_from_slice(data);
        if self.memory.len() as u64 >= shared.memory_each.min(WRITE_BATCH as u64) {
            self.write_out().await?;
        }
        Ok(())
    }

    /// The whole body, its place under the caps given back when the last clone of it drops.
    ///
    /// # Errors
    /// A failed write to disk.
    pub async fn finish(mut self) -> Result<Bytes, HoldError> {
        // Whole: no longer one that may be cut.
        self.shared.readers.leave(&self.reading);
        if self.disk.is_none() {
            let bytes = std::mem::take(&mut self.memory).freeze();
            let held = self.in_memory.take();
            return Ok(Bytes::from_owner(KeptWith { bytes, _held: held }));
        }
        self.write_out().await?;
        let Some(OnDisk {
            spill: Some(spill),
            held,
        }) = self.disk.take()
        else {
            return Err(HoldError::Disk(std::io::Error::other(
                "the spill file is gone",
            )));
        };
        let mapped = tokio::task::spawn_blocking(move || spill.finish(held))
            .await
            .map_err(std::io::Error::other)??;
        Ok(mapped)
    }

    /// Writes what is in memory to the spill file and lets its memory go.
    async fn write_out(&mut self) -> Result<(), HoldError> {
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        let Some(mut spill) = disk.spill.take() else {
            return Err(HoldError::Disk(std::io::Error::other(
                "an earlier write to the spill file failed",
            )));
        };
        let batch = std::mem::take(&mut self.memory).freeze();
        let written = batch.len() as u64;
        let spill = tokio::task::spawn_blocking(move || spill.write(&batch).map(|()| spill))
            .await
            .map_err(std::io::Error::other)??;
        disk.spill = Some(spill);
        if let Some(in_memory) = &mut self.in_memory {
            in_memory.shrink(written);
        }
        Ok(())
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        // Let the room go before saying so, so that a body waiting for it finds it.
        self.in_memory.take();
        self.disk.take();
        self.shared.readers.leave(&self.reading);
    }
}

/// Grows `held` by `n` in `place`; when that passes the node's cap, cuts slow bodies being
/// read and waits, at most [`ROOM_WAIT`], for their room.
async fn grow(
    shared: &Shared,
    reading: &Reading,
    held: &mut Held<u32>,
    place: Place,
    n: u64,
) -> Result<(), HoldError> {
    let full = |e| match place {
        Place::Memory => memory_full(e),
        Place::Disk => disk_full(e),
    };
    let total = match held.grow(n) {
        Ok(()) => return Ok(()),
        Err(e @ ByteCapFull::Each(_)) => return Err(full(e)),
        Err(e @ ByteCapFull::Total(_)) => e,
    };
    if !shared
        .readers
        .cut_slowest(reading, place, n, Instant::now())
    {
        return Err(full(total));
    }
    let deadline = tokio::time::Instant::now() + ROOM_WAIT;
    loop {
        let freed = shared.readers.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match held.grow(n) {
            Ok(()) => return Ok(()),
            Err(e @ ByteCapFull::Each(_)) => return Err(full(e)),
            Err(ByteCapFull::Total(_)) => {}
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(full(total));
        }
    }
}

/// Bytes, and the place under a cap they are held in.
struct KeptWith {
    bytes: Bytes,
    _held: Option<Held<u32>>,
}

impl AsRef<[u8]> for KeptWith {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

fn memory_full(e: ByteCapFull) -> HoldError {
    full(
        e,
        "limits.max_held_append_bytes",
        "limits.max_held_append_bytes_per_principal",
    )
}

fn disk_full(e: ByteCapFull) -> HoldError {
    full(
        e,
        "limits.max_spilled_append_bytes",
        "limits.max_spilled_append_bytes_per_principal",
    )
}

fn full(e: ByteCapFull, total: &'static str, each: &'static str) -> HoldError {
    let (limit, setting) = match e {
        ByteCapFull::Total(limit) => (limit, total),
        ByteCapFull::Each(limit) => (limit, each),
    };
    HoldError::Full { limit, setting }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: &std::path::Path) -> LimitsConfig {
        LimitsConfig {
            max_held_append_bytes: 10_000,
            max_held_append_bytes_per_principal: 10_000,
            append_memory_bytes: 100,
            max_spilled_append_bytes: 1_000_000,
            max_spilled_append_bytes_per_principal: 900_000,
            append_spill_dir: dir.to_path_buf(),
            ..LimitsConfig::default()
        }
    }

    fn pieces(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8; 1000 + i]).collect()
    }

    #[tokio::test]
    async fn a_body_past_its_memory_share_goes_to_disk_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldAppends::new(&limits(dir.path()));
        let mut small = held.body(1);
        small.push(b"0123456789").await.unwrap();
        let small = small.finish().await.unwrap();
        assert_eq!(&small[..], b"0123456789");
        // Held in memory until the bytes are gone.
        assert_eq!(
            held.0.memory.hold(1).grow(9_991),
            Err(ByteCapFull::Each(10_000))
        );
        drop(small);
        assert_eq!(held.0.memory.hold(1).grow(10_000), Ok(()));

        let mut large = held.body(1);
        // 300 pieces of about a kilobyte: past the memory share at once, and past a batch.
        let sent = pieces(300);
        for piece in &sent {
            large.push(piece).await.unwrap();
        }
        let large = large.finish().await.unwrap();
        assert_eq!(large, sent.concat());
        // Memory is free again, the disk holds the body until it drops.
        assert_eq!(held.0.memory.hold(2).grow(10_000), Ok(()));
        let on_disk = large.len() as u64;
        assert_eq!(
            held.0.disk.hold(2).grow(1_000_000 - on_disk + 1),
            Err(ByteCapFull::Total(1_000_000))
        );
        drop(large);
        assert_eq!(held.0.disk.hold(2).grow(900_000), Ok(()));
    }

    #[tokio::test]
    async fn a_body_past_the_disk_cap_is_refused_by_the_setting_it_passes() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldAppends::new(&limits(dir.path()));
        let mut body = held.body(7);
        let mut refused = None;
        for piece in pieces(700) {
            if let Err(e) = body.push(&piece).await {
                refused = Some(e);
                break;
            }
        }
        assert!(matches!(
            refused,
            Some(HoldError::Full {
                limit: 900_000,
                setting: "limits.max_spilled_append_bytes_per_principal"
            })
        ));
        drop(body);
        assert_eq!(held.0.disk.hold(7).grow(900_000), Ok(()));
    }

    #[test]
    fn a_walks_memory_counts_against_the_memory_caps_until_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldAppends::new(&limits(dir.path()));
        let walk = held.hold_memory(3, 9_000).unwrap();
        assert!(matches!(
            held.hold_memory(3, 1_001),
            Err(HoldError::Full {
                limit: 10_000,
                setting: "limits.max_held_append_bytes_per_principal"
            })
        ));
        drop(walk);
        assert!(held.hold_memory(3, 10_000).is_ok());
    }

    #[tokio::test]
    async fn a_spill_folder_that_is_gone_is_a_disk_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldAppends::new(&limits(&dir.path().join("gone")));
        let mut body = held.body(1);
        body.push(&[0; 50]).await.unwrap();
        assert!(matches!(body.push(&[0; 51]).await, Err(HoldError::Disk(_))));
    }
}
