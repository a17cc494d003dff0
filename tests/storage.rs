//! The storage actor against real files: multi-file torrents written piece
//! by piece and checked with `shoal::check`, preallocation, the durability
//! order across restarts, a full disk (a small tmpfs; needs root, as CI
//! runs), and corrupt database records.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use shoal::check::check;
use shoal::create::{create, CreateOptions, Source};
use shoal::disk::Layout;
use shoal::storage::{
    AddTorrent, Db, Preallocate, Storage, StorageConfig, StorageError, StorageHandle,
    StorageMessage, TorrentSettings, TorrentSource,
};
use shoal_proto::{InfoHash, Metainfo};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A torrent made by `shoal create` from files of `lens` bytes (in a
/// nested directory, names sorted as listed), with the whole content
/// stream for feeding pieces.
struct Fixture {
    _src: tempfile::TempDir,
    meta: Metainfo,
    content: Vec<u8>,
}

impl Fixture {
    fn new(lens: &[usize], piece_length: u64) -> Fixture {
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("image");
        for (i, &len) in lens.iter().enumerate() {
            let path = root
                .join(format!("part{}", i / 2))
                .join(format!("f{i}.bin"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, common::data(len, i as u64 + 1)).unwrap();
        }
        let source = Source::scan(&root).unwrap();
        let opts = CreateOptions {
            trackers: vec![],
            piece_length: Some(piece_length),
            private: false,
            comment: None,
            blake3: true,
            threads: 1,
            creation_date: None,
        };
        let meta = create(&source, &opts, &AtomicU64::new(0)).unwrap();
        let content = Layout::at_content(&meta.info, &root)
            .paths
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap())
            .collect();
        Fixture {
            _src: src,
            meta,
            content,
        }
    }

    fn ih(&self) -> InfoHash {
        self.meta.info_hash
    }

    fn piece(&self, i: u32) -> Vec<u8> {
        let pl = self.meta.info.piece_length as usize;
        let start = i as usize * pl;
        self.content[start..(start + pl).min(self.content.len())].to_vec()
    }

    fn add(&self, target: &Path) -> AddTorrent {
        AddTorrent {
            source: TorrentSource::Metainfo(self.meta.to_bytes()),
            target_dir: target.to_path_buf(),
            paused: false,
            settings: TorrentSettings {
                download_limit: None,
                upload_limit: Some(10 << 20),
                import_existing: false,
            },
        }
    }

    /// Whether the files under `target` verify against the torrent.
    fn verifies(&self, target: &Path) -> bool {
        let layout = Layout::in_dir(&self.meta.info, target);
        check(&self.meta.info, &layout, 2, &AtomicU64::new(0))
            .unwrap()
            .is_complete()
    }
}

async fn spawn(data: &Path, cfg: StorageConfig) -> (StorageHandle, CancellationToken) {
    let token = CancellationToken::new();
    let h = Storage::spawn(data, cfg, token.clone()).await.unwrap();
    (h, token)
}

/// Stops the actor gracefully and waits until its database is closed.
async fn stop(h: StorageHandle, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), h.stopped())
        .await
        .expect("storage stops within 30 s");
}

fn have_list(b: &shoal_proto::bitfield::Bitfield) -> Vec<u32> {
    b.iter_ones().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_file_torrent_is_written_read_back_and_verifies() {
    // Files straddle piece boundaries; one is empty.
    let fx = Fixture::new(&[70_000, 0, 16_384, 123_457, 5], 16 * 1024);
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    let ih = fx.ih();
    let n = fx.meta.info.piece_count();

    let summary = h.add_torrent(fx.add(target.path())).await.unwrap();
    assert_eq!((summary.infohash, summary.pieces, summary.have), (ih, n, 0));
    assert_eq!(summary.total_length, fx.content.len() as u64);
    assert!(matches!(
        h.add_torrent(fx.add(target.path())).await,
        Err(StorageError::AlreadyAdded(x)) if x == ih
    ));
    assert!(matches!(
        h.read_block(ih, 0, 0, 10).await,
        Err(StorageError::NotHave(0))
    ));
    assert!(matches!(
        h.write_piece(ih, 0, vec![0; 10]).await,
        Err(StorageError::WrongLength { index: 0, .. })
    ));
    assert!(matches!(
        h.write_piece(ih, n, fx.piece(0)).await,
        Err(StorageError::NoSuchPiece { .. })
    ));
    let other = InfoHash([9; 20]);
    assert!(matches!(
        h.write_piece(other, 0, vec![]).await,
        Err(StorageError::UnknownTorrent(x)) if x == other
    ));
    assert!(!fx.verifies(target.path()));

    // Every piece at once, in reverse order, plus a duplicate of each of
    // the first few: duplicates share the write.
    let mut writes = Vec::new();
    for i in (0..n).rev().chain(0..3) {
        let (h, data) = (h.clone(), fx.piece(i));
        writes.push(tokio::spawn(
            async move { h.write_piece(ih, i, data).await },
        ));
    }
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert!(h.have(ih).await.unwrap().is_full());
    // Writing a piece already had is a no-op.
    h.write_piece(ih, 1, fx.piece(1)).await.unwrap();

    // Read back in odd blocks, across file boundaries.
    for i in 0..n {
        let piece = fx.piece(i);
        let len = piece.len() as u32;
        for (off, l) in [(0, len), (1, len - 1), (len / 3, len / 3), (len - 1, 1)] {
            let got = h.read_block(ih, i, off, l).await.unwrap();
            assert_eq!(got, &piece[off as usize..(off + l) as usize], "piece {i}");
        }
    }
    assert!(matches!(
        h.read_block(ih, 0, 1, 16 * 1024).await,
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(fx.verifies(target.path()));

    let list = h.list_torrents().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].have, list[0].name.as_str()), (n, "image"));
    assert_eq!(list[0].settings.upload_limit, Some(10 << 20));
    stop(h, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_preallocated_when_added() {
    let fx = Fixture::new(&[300_000, 1 << 20, 0], 64 * 1024);
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    h.add_torrent(fx.add(target.path())).await.unwrap();
    let layout = Layout::in_dir(&fx.meta.info, target.path());
    for (path, f) in layout.paths.iter().zip(&fx.meta.info.files) {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!(m.len(), f.length, "{}", path.display());
        // st_blocks is in 512-byte units. ext4, xfs and tmpfs support
        // fallocate, so the blocks are really there.
        assert!(
            m.blocks() * 512 >= f.length,
            "{}: {} blocks for {} bytes; not preallocated",
            path.display(),
            m.blocks(),
            f.length
        );
    }
    stop(h, token).await;

    // The sparse mode only sets lengths.
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = StorageConfig {
        preallocate: Preallocate::Sparse,
        ..StorageConfig::default()
    };
    let (h, token) = spawn(data.path(), cfg).await;
    h.add_torrent(fx.add(target.path())).await.unwrap();
    for (path, f) in layout_in(&fx, target.path())
        .iter()
        .zip(&fx.meta.info.files)
    {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!((m.len(), m.blocks()), (f.length, 0));
    }
    stop(h, token).await;
}

fn layout_in(fx: &Fixture, target: &Path) -> Vec<PathBuf> {
    Layout::in_dir(&fx.meta.info, target).paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn have_is_durable_across_restarts_and_never_ahead_of_the_data() {
    let fx = Fixture::new(&[100_000, 60_000], 16 * 1024);
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ih = fx.ih();
    let n = fx.meta.info.piece_count();
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    h.add_torrent(fx.add(target.path())).await.unwrap();
    for i in [0, 2, 5, n - 1] {
        h.write_piece(ih, i, fx.piece(i)).await.unwrap();
    }
    stop(h, token).await;

    // A graceful restart keeps exactly the written pieces.
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    assert_eq!(have_list(&h.have(ih).await.unwrap()), vec![0, 2, 5, n - 1]);
    assert_eq!(
        h.read_block(ih, 5, 0, 100).await.unwrap(),
        &fx.piece(5)[..100]
    );

    // A crash: the actor is aborted right after a write was acknowledged.
    h.write_piece(ih, 3, fx.piece(3)).await.unwrap();
    drop(h);
    drop(token);
    let h = respawn_after_abort(data.path()).await;
    assert_eq!(
        have_list(&h.have(ih).await.unwrap()),
        vec![0, 2, 3, 5, n - 1]
    );

    // A file deleted behind our back loses its pieces' bits (durably,
    // before the file is recreated) and keeps the others'.
    drop(h);
    let paths = layout_in(&fx, target.path());
    std::fs::remove_file(&paths[1]).unwrap();
    let h = respawn_after_abort(data.path()).await;
    let first_file_pieces: Vec<u32> = vec![0, 2, 3, 5];
    let have = h.have(ih).await.unwrap();
    assert_eq!(
        have_list(&have),
        first_file_pieces,
        "piece 6 straddles both files"
    );
    assert_eq!(
        std::fs::metadata(&paths[1]).unwrap().len(),
        60_000,
        "the file is back"
    );
    drop(h);
    let h = respawn_after_abort(data.path()).await;
    assert_eq!(have_list(&h.have(ih).await.unwrap()), first_file_pieces);

    // Fill in the rest: the result verifies.
    for i in 0..n {
        h.write_piece(ih, i, fx.piece(i)).await.unwrap();
    }
    assert!(fx.verifies(target.path()));
}

/// Opens storage again after an abort. The aborted actor's database lock
/// is released when its last blocking job ends, so poll with a deadline.
async fn respawn_after_abort(data: &Path) -> StorageHandle {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Storage::spawn(data, StorageConfig::default(), CancellationToken::new()).await {
            Ok(h) => return h,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("storage did not reopen: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_one_torrent_keep_their_order() {
    let fx = Fixture::new(&[50_000, 50_000], 16 * 1024);
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ih = fx.ih();
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    let tx = h.sender();

    // Sent back to back, before any reply: add, write, remove (deleting
    // data), have, add again, write again.
    let (add1, add1_rx) = oneshot::channel();
    let (w1, w1_rx) = oneshot::channel();
    let (rm, rm_rx) = oneshot::channel();
    let (have, have_rx) = oneshot::channel();
    let (add2, add2_rx) = oneshot::channel();
    let (w2, w2_rx) = oneshot::channel();
    let msgs = vec![
        StorageMessage::AddTorrent {
            add: fx.add(target.path()),
            reply: add1,
        },
        StorageMessage::WritePiece {
            infohash: ih,
            index: 1,
            data: fx.piece(1),
            reply: w1,
        },
        StorageMessage::RemoveTorrent {
            infohash: ih,
            delete_data: true,
            reply: rm,
        },
        StorageMessage::Have {
            infohash: ih,
            reply: have,
        },
        StorageMessage::AddTorrent {
            add: fx.add(target.path()),
            reply: add2,
        },
        StorageMessage::WritePiece {
            infohash: ih,
            index: 2,
            data: fx.piece(2),
            reply: w2,
        },
    ];
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    add1_rx.await.unwrap().unwrap();
    w1_rx.await.unwrap().unwrap();
    rm_rx.await.unwrap().unwrap();
    assert!(matches!(
        have_rx.await.unwrap(),
        Err(StorageError::UnknownTorrent(_))
    ));
    assert_eq!(
        add2_rx.await.unwrap().unwrap().have,
        0,
        "a re-add starts empty"
    );
    w2_rx.await.unwrap().unwrap();
    assert_eq!(have_list(&h.have(ih).await.unwrap()), vec![2]);

    // Removing without deleting keeps the files; with deleting, they go.
    let paths = layout_in(&fx, target.path());
    h.remove_torrent(ih, false).await.unwrap();
    assert!(paths.iter().all(|p| p.exists()));
    assert!(h.list_torrents().await.unwrap().is_empty());
    h.add_torrent(fx.add(target.path())).await.unwrap();
    h.remove_torrent(ih, true).await.unwrap();
    assert!(paths.iter().all(|p| !p.exists()));
    assert!(!target.path().join("image").exists());
    assert!(target.path().exists());
    assert!(matches!(
        h.remove_torrent(ih, true).await,
        Err(StorageError::UnknownTorrent(_))
    ));

    // After shutdown, requests are refused.
    let h2 = h.clone();
    stop(h, token).await;
    assert!(matches!(h2.have(ih).await, Err(StorageError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_torrent_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    let add = AddTorrent {
        source: TorrentSource::Metainfo(b"d4:infod4:name3:..ee".to_vec()),
        target_dir: data.path().into(),
        paused: false,
        settings: TorrentSettings::default(),
    };
    assert!(matches!(
        h.add_torrent(add).await,
        Err(StorageError::BadTorrent(_))
    ));
    stop(h, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_stop_start_up_with_a_clear_error() {
    let fx = Fixture::new(&[40_000], 16 * 1024);
    let (data, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ih = fx.ih();
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    h.add_torrent(fx.add(target.path())).await.unwrap();
    h.write_piece(ih, 0, fx.piece(0)).await.unwrap();
    stop(h, token).await;

    let db_dir = data.path().join("db");
    let plant = |tree: &str, value: &[u8]| {
        // sled's threads can hold its lock a moment after the last handle
        // (ours, or storage's) is dropped; wait as `Db::open` does.
        assert!(Db::wait_released(&db_dir, Duration::from_secs(5)));
        let db = sled::open(&db_dir).unwrap();
        let t = db.open_tree(tree).unwrap();
        let old = t.insert(ih.0, value).unwrap().unwrap();
        db.flush().unwrap();
        old
    };

    let good = plant("torrents", b"\x01garbage");
    let err = Storage::spawn(
        data.path(),
        StorageConfig::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                tree: "torrents",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains(&ih.to_hex()) && text.contains("torrents"),
        "{text}"
    );

    plant("torrents", &good);
    plant("have", &[0xff, 0xff, 0xff]);
    let err = Storage::spawn(
        data.path(),
        StorageConfig::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { tree: "have", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bitfield"), "{err}");

    plant("have", &[0x80]);
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;
    assert_eq!(have_list(&h.have(ih).await.unwrap()), vec![0]);
    stop(h, token).await;
}

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when
/// the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the disk and must run as root \
             (CI does): mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Whether `e` is DiskFull naming a file of the torrent under `target`.
fn disk_full_in(e: &StorageError, fx: &Fixture, target: &Path) -> bool {
    match e {
        StorageError::DiskFull { path } => {
            layout_in(fx, target).contains(path)
                && e.to_string().contains(&path.display().to_string())
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_bigger_than_the_disk_is_refused_when_added_then_completes() {
    let fs = Tmpfs::mount("1m");
    let fx = Fixture::new(&[900_000, 1_200_000], 64 * 1024);
    let data = tempfile::tempdir().unwrap();
    let ih = fx.ih();
    let (h, token) = spawn(data.path(), StorageConfig::default()).await;

    let err = h.add_torrent(fx.add(fs.path())).await.unwrap_err();
    assert!(disk_full_in(&err, &fx, fs.path()), "{err:?}");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(matches!(
        h.have(ih).await,
        Err(StorageError::UnknownTorrent(_))
    ));
    assert!(h.list_torrents().await.unwrap().is_empty());

    fs.resize("8m");
    h.add_torrent(fx.add(fs.path())).await.unwrap();
    for i in 0..fx.meta.info.piece_count() {
        h.write_piece(ih, i, fx.piece(i)).await.unwrap();
    }
    assert!(h.have(ih).await.unwrap().is_full());
    assert!(fx.verifies(fs.path()));
    stop(h, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_without_marking_them_then_the_torrent_completes() {
    let fs = Tmpfs::mount("1m");
    let fx = Fixture::new(&[900_000, 1_200_000], 64 * 1024);
    let data = tempfile::tempdir().unwrap();
    let ih = fx.ih();
    let n = fx.meta.info.piece_count();
    // Sparse files: the space runs out during the writes, not the add.
    let cfg = StorageConfig {
        preallocate: Preallocate::Sparse,
        ..StorageConfig::default()
    };
    let (h, token) = spawn(data.path(), cfg.clone()).await;
    h.add_torrent(fx.add(fs.path())).await.unwrap();

    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    for i in 0..n {
        match h.write_piece(ih, i, fx.piece(i)).await {
            Ok(()) => stored.push(i),
            Err(e) => {
                assert!(disk_full_in(&e, &fx, fs.path()), "piece {i}: {e:?}");
                failed.push(i);
            }
        }
    }
    eprintln!("stored {stored:?}, failed (disk full) {failed:?}");
    assert!(
        !stored.is_empty() && !failed.is_empty(),
        "{stored:?} {failed:?}"
    );
    assert_eq!(have_list(&h.have(ih).await.unwrap()), stored);
    for &i in &failed {
        assert!(matches!(
            h.read_block(ih, i, 0, 1).await,
            Err(StorageError::NotHave(_))
        ));
    }
    // The same holds in the database, across a restart.
    stop(h, token).await;
    let (h, token) = spawn(data.path(), cfg).await;
    assert_eq!(have_list(&h.have(ih).await.unwrap()), stored);

    // More room: the failed pieces go in and the torrent verifies.
    fs.resize("8m");
    for &i in &failed {
        h.write_piece(ih, i, fx.piece(i)).await.unwrap();
    }
    assert!(h.have(ih).await.unwrap().is_full());
    assert!(fx.verifies(fs.path()));
    stop(h, token).await;
}
