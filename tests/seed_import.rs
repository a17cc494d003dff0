//! A seed over data already on disk: the pieces storage lacks are checked
//! in place and marked had without being written again, bad pieces stay
//! not had and are fetched from peers, and storage refuses to mark pieces
//! checked anywhere but where its record keeps the torrent.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::mesh::{make_torrent, start, wait_status, MeshNode};
use shoal::storage::{
    AddTorrent, Storage, StorageConfig, StorageError, TorrentSettings, TorrentSource,
};
use shoal::swarm::{MeshError, Role};
use tokio_util::sync::CancellationToken;

const PIECE: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

/// Writes `content` to `<dir>/image.bin`, returning `dir`.
fn put(dir: &Path, content: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("image.bin"), content).unwrap();
    dir.to_path_buf()
}

/// Storage in `db` (stopped by the returned token) holding the torrent
/// `meta` with its content in `target_dir`.
async fn storage_with(
    db: &Path,
    meta: &shoal_proto::Metainfo,
    target_dir: &Path,
) -> (shoal::storage::StorageHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let storage = Storage::spawn(db, StorageConfig::default(), stop.clone())
        .await
        .unwrap();
    storage
        .add_torrent(AddTorrent {
            source: TorrentSource::Metainfo(meta.to_bytes()),
            target_dir: target_dir.to_path_buf(),
            paused: false,
            settings: TorrentSettings::default(),
        })
        .await
        .unwrap();
    (storage, stop)
}

/// What must not change when data is imported rather than rewritten.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    ino: u64,
    mtime: (i64, i64),
    digest: blake3::Hash,
}

fn file_state(path: &Path) -> FileState {
    let m = std::fs::metadata(path).unwrap();
    FileState {
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
        digest: blake3::hash(&std::fs::read(path).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_imports_in_place_and_fetches_its_bad_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let content = common::data(12 * PIECE + 1000, 9);
    let meta = make_torrent(
        &put(&tmp.path().join("src"), &content).join("image.bin"),
        Some(PIECE as u64),
        vec![],
    );
    let ih = meta.info_hash;
    let n = meta.info.piece_count();
    const BAD: u32 = 5;

    // Seed A: the whole file, with one byte of piece BAD flipped, and an
    // mtime far in the past so that any write would show.
    let a_dir = tmp.path().join("a");
    let mut corrupted = content.clone();
    corrupted[BAD as usize * PIECE + 77] ^= 0xff;
    let a_file = put(&a_dir, &corrupted).join("image.bin");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&a_file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = file_state(&a_file);

    let a = MeshNode::new(&tmp.path().join("a-db")).await;
    let at = a
        .mesh
        .start(start(&meta, &a_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    let have = a.storage.have(ih).await.unwrap();
    assert_eq!(have.count(), n - 1, "every piece but the bad one is had");
    assert!(!have.get(BAD), "the bad piece is not had");
    assert!(!at.is_complete());
    assert_eq!(
        file_state(&a_file),
        before,
        "importing neither rewrote nor replaced the file"
    );

    // B holds only piece BAD (the rest of its copy is zeros).
    let mut only_bad = vec![0u8; content.len()];
    let r = BAD as usize * PIECE..(BAD as usize + 1) * PIECE;
    only_bad[r.clone()].copy_from_slice(&content[r]);
    let b_dir = put(&tmp.path().join("b"), &only_bad);
    let b = MeshNode::new(&tmp.path().join("b-db")).await;
    let bt = b
        .mesh
        .start(start(&meta, &b_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    let b_have = b.storage.have(ih).await.unwrap();
    assert_eq!((b_have.count(), b_have.get(BAD)), (1, true));

    // A leecher completes from the two, and A fetches its bad piece.
    let c_dir = tmp.path().join("c");
    let c = MeshNode::new(&tmp.path().join("c-db")).await;
    let ct = c
        .mesh
        .start(start(&meta, &c_dir, Role::Leech, vec![a.dial(), b.dial()]))
        .await
        .unwrap();
    at.add_peers(vec![b.dial()]).await.unwrap();
    wait_status("the leecher completes", LIMIT, &ct, |s| s.complete).await;
    assert!(std::fs::read(c_dir.join("image.bin")).unwrap() == content);
    let s = wait_status("the partial seed completes", LIMIT, &at, |s| s.complete).await;
    assert_eq!(s.pieces_downloaded, 1, "A fetched only its bad piece");
    let after = std::fs::read(&a_file).unwrap();
    assert!(
        after == content,
        "A's bad piece was replaced by the good one"
    );

    c.stop(ct).await;
    b.stop(bt).await;
    a.stop(at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_refuses_data_that_is_not_where_the_record_says() {
    let tmp = tempfile::tempdir().unwrap();
    let content = common::data(4 * PIECE, 3);
    let x = put(&tmp.path().join("x"), &content);
    let meta = make_torrent(&x.join("image.bin"), Some(PIECE as u64), vec![]);
    let ih = meta.info_hash;
    let db = tmp.path().join("db");

    let (storage, stop) = storage_with(&db, &meta, &x).await;

    // Another directory than the record's.
    let y = put(&tmp.path().join("y"), &content);
    let e = storage.mark_had(ih, y.clone(), vec![0]).await.unwrap_err();
    assert!(matches!(e, StorageError::NotInPlace { .. }), "{e}");
    assert!(e.to_string().contains(&x.display().to_string()), "{e}");
    // The same directory spelled another way is fine.
    let spelled = tmp.path().join("y/../x");
    storage.mark_had(ih, spelled, vec![0, 0]).await.unwrap();
    let e = storage
        .mark_had(ih, x.clone(), vec![1, 4])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::NoSuchPiece { index: 4, count: 4 }),
        "{e}"
    );
    // The file replaced under storage (renamed over, as rsync does).
    std::fs::copy(x.join("image.bin"), tmp.path().join("new")).unwrap();
    std::fs::rename(tmp.path().join("new"), x.join("image.bin")).unwrap();
    let e = storage.mark_had(ih, x.clone(), vec![1]).await.unwrap_err();
    assert!(matches!(e, StorageError::NotInPlace { .. }), "{e}");
    let have = storage.have(ih).await.unwrap();
    assert_eq!((have.get(0), have.count()), (true, 1));

    // The mark is durable: a restarted storage still has piece 0.
    stop.cancel();
    storage.stopped().await;
    drop(storage);
    let stop = CancellationToken::new();
    let storage = Storage::spawn(&db, StorageConfig::default(), stop.clone())
        .await
        .unwrap();
    let have = storage.have(ih).await.unwrap();
    assert_eq!((have.get(0), have.count()), (true, 1));
    stop.cancel();
    storage.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_started_elsewhere_than_its_record_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let content = common::data(3 * PIECE + 5, 4);
    let x = put(&tmp.path().join("x"), &content);
    let meta = make_torrent(&x.join("image.bin"), Some(PIECE as u64), vec![]);
    let node = MeshNode::new(&tmp.path().join("db")).await;
    // Added as a leecher in x, whose data is then lost.
    let t = node
        .mesh
        .start(start(&meta, &x, Role::Leech, vec![]))
        .await
        .unwrap();
    node.mesh.stop(&t).await;
    // Seeding a good copy in y must not mark pieces of the files in x.
    let y = put(&tmp.path().join("y"), &content);
    let e = node
        .mesh
        .start(start(&meta, &y, Role::Seed, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, MeshError::Storage(StorageError::NotInPlace { .. })),
        "{e}"
    );
    assert_eq!(node.storage.have(meta.info_hash).await.unwrap().count(), 0);
    node.stop(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_and_a_write_of_one_piece_are_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let content = common::data(3 * PIECE, 5);
    let x = put(&tmp.path().join("x"), &content);
    let meta = make_torrent(&x.join("image.bin"), Some(PIECE as u64), vec![]);
    let ih = meta.info_hash;
    let (storage, stop) = storage_with(&tmp.path().join("db"), &meta, &x).await;
    let piece = content[PIECE..2 * PIECE].to_vec();
    let (w, m) = tokio::join!(
        storage.write_piece(ih, 1, piece),
        storage.mark_had(ih, x.clone(), vec![0, 1, 2])
    );
    w.unwrap();
    m.unwrap();
    assert!(storage.have(ih).await.unwrap().is_full());
    // Marking what is had already is answered at once.
    storage.mark_had(ih, x.clone(), vec![2]).await.unwrap();
    assert_eq!(std::fs::read(x.join("image.bin")).unwrap(), content);
    stop.cancel();
    storage.stopped().await;
}
