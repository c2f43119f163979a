//! Runs the store conformance suite against the SQLite backend, file-backed and in memory.

use agora_store::{SqliteStore, Store, conformance, open_store};

#[test]
fn sqlite_file_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run_all(&mut || {
        n += 1;
        let path = dir.path().join(format!("store-{n}.db"));
        Box::new(SqliteStore::open(&path).unwrap())
    });
}

#[test]
fn sqlite_in_memory_passes_conformance() {
    conformance::run_all(&mut || Box::new(SqliteStore::open_in_memory().unwrap()));
}

#[test]
fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agora.db");
    conformance::survives_reopen(&mut || Box::new(SqliteStore::open(&path).unwrap()));
}

#[test]
fn open_store_url_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agora.db").display());
    conformance::survives_reopen(&mut || open_store(&url).unwrap());
    // The plain path names the same file as the url.
    let by_path = open_store(&dir.path().join("agora.db").display().to_string()).unwrap();
    assert_eq!(by_path.last_seq().unwrap(), 4);
}

#[test]
fn open_store_in_memory_passes_conformance() {
    conformance::run_all(&mut || open_store(":memory:").unwrap());
}

#[test]
fn model_check_survives_reopen_between_seeds() {
    // The random model check picks up whatever the store holds, so running it across reopens
    // checks that everything it wrote, pruning included, came back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agora.db");
    for seed in 10..14 {
        let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&path).unwrap());
        conformance::random_operations_match_model_with_seed(store.as_mut(), seed, 200);
    }
}
