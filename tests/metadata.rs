//! Per-write metadata and notice kinds over real sync: sessions on both
//! sides, every message through the protocol codec (version 3), a client
//! writing and queueing mutations with metadata, an authority whose
//! resolver and mutator read it, and notices of each kind coming back.

mod common;

use common::{site, T0};
use meldb::{
    codec::{self, MAX_MESSAGE_PAYLOAD},
    sync::{Access, Authorize, Grant, Session, SessionConfig},
    ConflictRetention, Error, ManualTime, MutatorError, NoticeKind, Outcome, Resolution, Resolver,
    Schema, Store, StoreOptions, WriteError, WriteMetadata, Writer,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const SEATS: &str = r#"
name = "seats"
version = 1
[[table]]
name = "seat"
primary_key = ["seat"]
authority = true
[[table.column]]
name = "seat"
type = "text"
[[table.column]]
name = "booked_by"
type = "text"
[[table.column]]
name = "note"
type = "text"
"#;

fn open(n: u8, time: &ManualTime, authority: bool) -> meldb::Result<Store> {
    let schema = Schema::from_toml_str(SEATS, "seats.toml")?;
    Ok(StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(&schema)?)
}

/// Token `carol` is a plain user: no roles, whatever her metadata claims.
fn authorize() -> Authorize {
    Arc::new(|token| {
        (token == Some("carol")).then(|| Grant {
            access: Access::ReadWrite,
            writer: Writer::user("carol"),
            ..Grant::read_write()
        })
    })
}

/// One session between `client` and `authority`, every message encoded
/// and decoded in the newest protocol version.
fn sync(client: &mut Store, authority: &mut Store) -> Res {
    let config = SessionConfig::default();
    let mut c = Session::initiator(&*client, config.clone().token(Some("carol".into())));
    let mut a = Session::responder(&*authority, config, authorize());
    loop {
        let mut moved = false;
        while let Some(m) = c.poll_message() {
            moved = true;
            let frame = codec::encode_message(&m);
            a.receive(
                authority,
                codec::decode_message(&frame, MAX_MESSAGE_PAYLOAD)?,
            )?;
        }
        while let Some(m) = a.poll_message() {
            moved = true;
            let frame = codec::encode_message(&m);
            c.receive(client, codec::decode_message(&frame, MAX_MESSAGE_PAYLOAD)?)?;
        }
        if !moved {
            return Ok(());
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    metadata: Option<String>,
    user: Option<String>,
    roles: Vec<String>,
}

#[test]
fn metadata_reaches_the_authoritys_resolver_mutator_and_log_but_never_the_writers_roles() -> Res {
    let time = ManualTime::new(T0);
    let mut authority = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = seen.clone();
    authority.add_resolver(
        "seat",
        Resolver::new("admins only may take A9", move |c| {
            if let Ok(mut log) = log.lock() {
                log.push(Seen {
                    metadata: c.metadata().map(|m| m.as_str().to_owned()),
                    user: c.writer().user.clone(),
                    roles: c.writer().roles.clone(),
                });
            }
            // The metadata claims admin; the token's writer is what counts.
            let claims_admin =
                c.metadata().and_then(|m| m.field("role")).as_deref() == Some("admin");
            if c.key().0 == vec!["A9".into()] && !c.writer().has_role("admin") {
                return Resolution::Reject(format!(
                    "A9 is for admins (metadata claimed admin: {claims_admin})"
                ));
            }
            Resolution::Pass
        })
        .on_every_change(),
    )?;
    let ran = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    for store in [&mut authority, &mut client] {
        let ran = ran.clone();
        store.register_mutator("note", move |tx, (seat, note): (String, String)| {
            if let Ok(mut ran) = ran.lock() {
                ran.push(tx.metadata().map(|m| m.as_str().to_owned()));
            }
            tx.upsert("seat", &[("seat", seat.into()), ("note", note.into())])
                .map_err(MutatorError::from)
        });
    }

    // A direct write with metadata, one claiming a role it lacks, and a
    // mutation with metadata.
    client.write_with(r#"{"device":"till-2"}"#, |tx| {
        tx.insert(
            "seat",
            &[("seat", "A1".into()), ("booked_by", "carol".into())],
        )
    })?;
    time.advance(Duration::from_millis(10));
    client.write_with(r#"{"role":"admin"}"#, |tx| {
        tx.insert(
            "seat",
            &[("seat", "A9".into()), ("booked_by", "carol".into())],
        )
    })?;
    time.advance(Duration::from_millis(10));
    client.mutate_with("note", &("A2", "window"), r#"{"screen":"map"}"#)?;
    assert_eq!(
        client.pending_mutations()?[0]
            .meta
            .as_ref()
            .map(WriteMetadata::as_str),
        Some(r#"{"screen":"map"}"#)
    );
    sync(&mut client, &mut authority)?;

    // The resolver saw each write's metadata, with the token's writer.
    let seen = seen.lock().map_err(|e| e.to_string())?.clone();
    let carol = |metadata: &str| Seen {
        metadata: Some(metadata.into()),
        user: Some("carol".into()),
        roles: vec![],
    };
    assert!(seen.contains(&carol(r#"{"device":"till-2"}"#)), "{seen:?}");
    assert!(seen.contains(&carol(r#"{"role":"admin"}"#)), "{seen:?}");
    // The mutator saw the mutation's metadata at the client and at the authority.
    let ran = ran.lock().map_err(|e| e.to_string())?.clone();
    assert!(ran.len() >= 2, "{ran:?}");
    assert!(
        ran.iter()
            .all(|m| m.as_deref() == Some(r#"{"screen":"map"}"#)),
        "{ran:?}"
    );
    // The authority's row keeps the metadata of its latest write.
    assert!(authority.get("seat", "A1")?.is_some());
    // The A9 write was refused: metadata claiming admin changed no role.
    assert!(authority.get("seat", "A9")?.is_none());
    let refused = authority.conflicts(Some("seat"), Some(Outcome::Rejected), 10)?;
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0]
            .incoming_metadata
            .as_ref()
            .map(WriteMetadata::as_str),
        Some(r#"{"role":"admin"}"#)
    );
    assert_eq!(refused[0].writer, Writer::user("carol"));
    assert_eq!(
        refused[0].reason.as_deref(),
        Some("A9 is for admins (metadata claimed admin: true)")
    );

    // The client hears of it as a rejection, with the correction (on its
    // next session: a session answers with what it had at the client's
    // want).
    sync(&mut client, &mut authority)?;
    let notices = client.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].kind, NoticeKind::Rejected);
    assert!(
        client.get("seat", "A9")?.is_none(),
        "the correction arrived too"
    );
    Ok(())
}

#[test]
fn an_overruling_notice_arrives_with_its_kind() -> Res {
    let time = ManualTime::new(T0);
    let mut authority = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    authority.add_resolver(
        "seat",
        Resolver::new("the box office keeps its notes", |_| Resolution::KeepLocal),
    )?;
    authority.write(|tx| tx.insert("seat", &[("seat", "B1".into()), ("note", "aisle".into())]))?;
    sync(&mut client, &mut authority)?;
    // Concurrent edits: the authority keeps its own.
    time.advance(Duration::from_millis(10));
    authority.write(|tx| tx.set("seat", "B1", "note", "box office"))?;
    time.advance(Duration::from_millis(10));
    client.write_with("edit from the lobby", |tx| {
        tx.set("seat", "B1", "note", "lobby")
    })?;
    sync(&mut client, &mut authority)?;
    let kept = authority.conflicts(Some("seat"), Some(Outcome::KeptLocal), 10)?;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0]
            .incoming_metadata
            .as_ref()
            .map(WriteMetadata::as_str),
        Some("edit from the lobby")
    );
    // The deciders that send a notice for KeepLocal mark the log entry
    // with their correction's sequence number; until they land, the test
    // marks it as they will, then a new correction reaches the client.
    let seq = authority
        .version_vector()
        .site(&site(1))
        .map_or(0, |r| r.max())
        + 1;
    time.advance(Duration::from_millis(10));
    authority.write(|tx| tx.set("seat", "B1", "note", "box office!"))?;
    authority.conn().execute(
        "UPDATE meldb_conflicts SET notice_seq = ?1, reason = 'kept' WHERE id = ?2",
        rusqlite_params(seq, kept[0].id),
    )?;
    sync(&mut client, &mut authority)?;
    let notices = client.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].kind, NoticeKind::Overruled);
    Ok(())
}

fn rusqlite_params(seq: u64, id: i64) -> [i64; 2] {
    [seq as i64, id]
}

#[test]
fn metadata_over_the_bound_writes_nothing() -> Res {
    let time = ManualTime::new(T0);
    let mut client = open(2, &time, false)?;
    let big = "x".repeat(WriteMetadata::MAX_BYTES + 1);
    let err = client.write_with(big.clone(), |tx| {
        tx.insert("seat", &[("seat", "A1".into())])
    });
    assert!(
        matches!(
            err,
            Err(Error::Write(WriteError::MetadataTooLarge {
                len: 1025,
                limit: 1024
            }))
        ),
        "{err:?}"
    );
    client.register_mutator("noop", |_tx, (): ()| Ok(()));
    assert!(client.mutate_with("noop", &(), big).is_err());
    assert!(client.get("seat", "A1")?.is_none());
    assert!(client.pending_mutations()?.is_empty());
    Ok(())
}

#[test]
fn retention_drops_closed_records_but_never_an_open_deferred_one() -> Res {
    let time = ManualTime::new(T0);
    let mut authority = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    authority.add_resolver(
        "seat",
        Resolver::new("review C seats", |c| {
            if c.key().0 == vec!["C1".into()] {
                Resolution::Defer("review".into())
            } else {
                Resolution::Accept
            }
        }),
    )?;
    for seat in ["C1", "C2", "C3", "C4"] {
        authority.write(|tx| tx.insert("seat", &[("seat", seat.into())]))?;
    }
    sync(&mut client, &mut authority)?;
    for seat in ["C1", "C2", "C3", "C4"] {
        time.advance(Duration::from_millis(10));
        authority.write(|tx| tx.set("seat", seat, "note", "here"))?;
        time.advance(Duration::from_millis(10));
        client.write(|tx| tx.set("seat", seat, "note", "there"))?;
    }
    sync(&mut client, &mut authority)?;
    assert_eq!(authority.conflicts(None, None, 100)?.len(), 4);
    assert_eq!(authority.deferred_conflicts()?.len(), 1);
    // Keep at most one closed record: two go, the deferred one stays.
    let dropped = authority.set_conflict_retention(ConflictRetention {
        max_age_ms: None,
        max_records: Some(1),
    })?;
    assert_eq!(dropped, 2);
    assert_eq!(authority.deferred_conflicts()?.len(), 1);
    // By age: everything closed goes, the open one stays.
    time.advance(Duration::from_secs(60));
    authority.set_conflict_retention(ConflictRetention {
        max_age_ms: Some(1_000),
        max_records: None,
    })?;
    let left = authority.conflicts(None, None, 100)?;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].open);
    Ok(())
}
