//! Sessions driven in-process over a perfect channel.

use super::*;
use crate::clock::SiteId;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions};
use std::sync::Arc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SCHEMA: &str = r#"
name = "shop"
version = 1
[[table]]
name = "item"
primary_key = ["sku"]
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"
"#;

fn store(n: u8) -> crate::Result<Store> {
    let schema = Schema::from_toml_str(SCHEMA, "shop.toml")?;
    Ok(StoreOptions::new()
        .site_id(SiteId::from_bytes([n; 16]))
        .open_in_memory(&schema)?)
}

fn insert(store: &mut Store, range: std::ops::Range<usize>) -> crate::Result<()> {
    store.write(|tx| {
        for i in range {
            tx.insert(
                "item",
                &[("sku", format!("k{i}").into()), ("stock", 1.into())],
            )?;
        }
        Ok(())
    })
}

fn allow(access: Access) -> Authorize {
    Arc::new(move |token| {
        (token == Some("t")).then(|| Grant {
            access,
            writer: crate::resolve::Writer::user("t"),
            ..Grant::read_write()
        })
    })
}

/// Delivers every message both ways until neither side has anything to
/// say. Returns the first error either side reported.
fn pump(a: &mut Session, sa: &mut Store, b: &mut Session, sb: &mut Store) -> Result<(), SyncError> {
    let mut first_error = None;
    loop {
        let mut moved = false;
        while let Some(m) = a.poll_message() {
            moved = true;
            if let Err(e) = b.receive(sb, m) {
                first_error.get_or_insert(e);
            }
        }
        while let Some(m) = b.poll_message() {
            moved = true;
            if let Err(e) = a.receive(sa, m) {
                first_error.get_or_insert(e);
            }
        }
        if !moved {
            return first_error.map_or(Ok(()), Err);
        }
    }
}

#[test]
fn both_directions_in_small_batches() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    insert(&mut sa, 0..25)?;
    insert(&mut sb, 100..113)?;
    let config = SessionConfig::default().batch_rows(4).window(2);
    let mut a = Session::initiator(&sa, config.clone().token(Some("t".into())));
    let mut b = Session::responder(&sb, config, allow(Access::ReadWrite));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(a.is_caught_up() && b.is_caught_up());
    assert_eq!(sa.digest()?, sb.digest()?);
    assert_eq!(a.stats().rows_sent, 25);
    assert_eq!(a.stats().batches_sent, 7);
    assert_eq!(a.stats().rows_acked, 25);
    assert_eq!(b.stats().rows_sent, 13);
    assert_eq!(
        a.acknowledged().site(&sa.site_id()).map(|r| r.max()),
        Some(25)
    );

    // A second session sends nothing: the version vectors say it all.
    insert(&mut sa, 25..26)?;
    let mut a = Session::initiator(&sa, SessionConfig::default().token(Some("t".into())));
    let mut b = Session::responder(&sb, SessionConfig::default(), allow(Access::ReadWrite));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert_eq!((a.stats().rows_sent, b.stats().rows_sent), (1, 0));
    assert_eq!(sa.digest()?, sb.digest()?);
    Ok(())
}

#[test]
fn an_interrupted_sync_resumes_with_only_what_is_missing() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    insert(&mut sa, 0..40)?;
    let config = SessionConfig::default().batch_rows(5).window(1);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config.clone(), Arc::new(|_| Some(Grant::read_write())));
    // Deliver until b has applied three batches, then drop the connection.
    let mut applied = 0;
    while applied < 3 {
        let mut moved = false;
        while let Some(m) = a.poll_message() {
            moved = true;
            applied += u64::from(matches!(m, Message::Changes(_)));
            b.receive(&mut sb, m)?;
        }
        while let Some(m) = b.poll_message() {
            moved = true;
            a.receive(&mut sa, m)?;
        }
        assert!(moved);
    }
    assert_eq!(b.stats().rows_received, 15);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, Arc::new(|_| Some(Grant::read_write())));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert_eq!(a.stats().rows_sent, 25);
    assert_eq!(sa.digest()?, sb.digest()?);
    Ok(())
}

#[test]
fn a_bad_token_is_refused_before_anything_else_is_read() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    insert(&mut sa, 0..3)?;
    let mut a = Session::initiator(&sa, SessionConfig::default().token(Some("wrong".into())));
    let mut b = Session::responder(&sb, SessionConfig::default(), allow(Access::ReadWrite));
    let hello = a.poll_message().ok_or("no hello")?;
    assert!(matches!(
        b.receive(&mut sb, hello),
        Err(SyncError::Unauthorized { presented: true })
    ));
    assert!(b.is_closed());
    let notice = b.poll_message().ok_or("no notice")?;
    assert!(matches!(
        a.receive(&mut sa, notice),
        Err(SyncError::Refused {
            code: NoticeCode::Unauthorized,
            ..
        })
    ));
    // Whatever else arrives is ignored.
    let changes = sa.changes_since(&sb.version_vector())?;
    b.receive(
        &mut sb,
        Message::Changes(message::Batch { seq: 1, changes }),
    )?;
    assert_eq!(sb.version_vector(), crate::VersionVector::new());
    Ok(())
}

/// Attacker: no valid token, probing with a hello of another schema and
/// the replica's own site id. Must not happen: the refusal names the
/// replica's schema or says the site is its own (both are checked only
/// once the token is valid).
#[test]
fn a_peer_without_a_valid_token_learns_neither_schema_nor_site() -> TestResult {
    let mut sb = store(2)?;
    let mut b = Session::responder(&sb, SessionConfig::default(), allow(Access::ReadWrite));
    let probe = Message::Hello(message::Hello {
        site: sb.site_id(),
        schema: "guess".into(),
        schema_version: 1,
        token: Some("wrong".into()),
        accepts_changes: true,
        live: false,
        authority: false,
        namespace: None,
        compression: vec![],
    });
    let refused = b.receive(&mut sb, probe);
    assert!(
        matches!(refused, Err(SyncError::Unauthorized { presented: true })),
        "{refused:?}"
    );
    let Some(Message::Notice(notice)) = b.poll_message() else {
        return Err("no notice".into());
    };
    assert_eq!(notice.code, NoticeCode::Unauthorized);
    assert!(!notice.message.contains("shop"), "{}", notice.message);
    Ok(())
}

#[test]
fn a_read_only_peer_receives_and_its_writes_are_refused() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    insert(&mut sa, 0..3)?;
    insert(&mut sb, 10..12)?;
    let config = SessionConfig::default().token(Some("t".into()));
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, allow(Access::ReadOnly));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(a.is_caught_up() && b.is_caught_up());
    assert_eq!(a.stats().rows_received, 2);
    assert_eq!(a.stats().rows_sent, 0);
    assert!(!a.peer().ok_or("no peer")?.accepts_changes);

    // A misbehaving read-only client sends a batch anyway.
    let before = sb.digest()?;
    let changes = sa.changes_since(&crate::VersionVector::new())?;
    let result = b.receive(
        &mut sb,
        Message::Changes(message::Batch { seq: 1, changes }),
    );
    assert!(matches!(result, Err(SyncError::ReadOnly { ref sent }) if sent == "a batch of 5 rows"));
    assert_eq!(sb.digest()?, before);
    assert!(matches!(
        b.poll_message(),
        Some(Message::Notice(message::Notice {
            code: NoticeCode::ReadOnly,
            ..
        }))
    ));
    Ok(())
}

#[test]
fn protocol_violations_close_the_session() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    let mut b = Session::responder(&sb, SessionConfig::default(), allow(Access::ReadWrite));
    assert!(matches!(
        b.receive(&mut sb, Message::Caught(1)),
        Err(SyncError::Unexpected { .. })
    ));
    let other_schema = Schema::from_toml_str(&SCHEMA.replace("shop", "till"), "till.toml")?;
    let c = StoreOptions::new().open_in_memory(&other_schema)?;
    // With a valid token (without one, the schema is never compared).
    let mut hello_from_c = Session::initiator(&c, SessionConfig::default().token(Some("t".into())));
    let mut b = Session::responder(&sb, SessionConfig::default(), allow(Access::ReadWrite));
    let hello = hello_from_c.poll_message().ok_or("no hello")?;
    assert!(matches!(
        b.receive(&mut sb, hello),
        Err(SyncError::SchemaMismatch { .. })
    ));

    // Connecting to itself.
    let mut a = Session::initiator(&sa, SessionConfig::default().token(Some("t".into())));
    let mut a2 = Session::responder(&sa, SessionConfig::default(), allow(Access::ReadWrite));
    let hello = a.poll_message().ok_or("no hello")?;
    assert!(matches!(
        a2.receive(&mut sa, hello),
        Err(SyncError::SameSite(_))
    ));

    // An acknowledgement for a batch never sent.
    let mut a = Session::initiator(&sa, SessionConfig::default());
    let mut b = Session::responder(
        &sb,
        SessionConfig::default(),
        Arc::new(|_| Some(Grant::read_write())),
    );
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(matches!(
        a.receive(
            &mut sa,
            Message::Ack(message::Ack {
                seq: 99,
                applied: 0
            })
        ),
        Err(SyncError::UnknownAck { seq: 99 })
    ));
    Ok(())
}

#[test]
fn live_sessions_push_new_writes_and_do_not_echo() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    let config = SessionConfig::default().live(true);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, Arc::new(|_| Some(Grant::read_write())));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(a.is_caught_up() && b.is_caught_up());

    insert(&mut sa, 0..2)?;
    a.local_changed(&sa)?;
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    // b applied a's rows; telling b its store changed sends nothing back.
    b.local_changed(&sb)?;
    assert!(b.poll_message().is_none());
    insert(&mut sb, 10..11)?;
    b.local_changed(&sb)?;
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert_eq!(sa.digest()?, sb.digest()?);
    assert_eq!((a.stats().rows_sent, b.stats().rows_sent), (2, 1));
    assert!(a.is_caught_up() && b.is_caught_up());
    Ok(())
}

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
"#;

#[test]
fn the_authority_sees_the_tokens_writer_and_its_rejections_reach_the_client() -> TestResult {
    use crate::resolve::{Resolution, Resolver};
    let schema = Schema::from_toml_str(SEATS, "seats.toml")?;
    let open = |n: u8, authority: bool| {
        StoreOptions::new()
            .site_id(SiteId::from_bytes([n; 16]))
            .authority(authority)
            .open_in_memory(&schema)
    };
    let mut server = open(1, true)?;
    server.add_resolver(
        "seat",
        Resolver::new("first booking wins; the writer must be the token's", |c| {
            if c.writer().user.as_deref() != Some("t") {
                return Resolution::Reject(format!("unexpected writer {:?}", c.writer()));
            }
            match (c.local().and_then(|r| r.text("booked_by")), c.incoming()) {
                (Some(first), Some(inc)) if inc.text("booked_by") != Some(first) => {
                    Resolution::Reject(format!("seat {} already booked by {first}", c.key()))
                }
                _ => Resolution::Accept,
            }
        }),
    )?;
    let mut alice = open(2, false)?;
    let mut bob = open(3, false)?;
    for (store, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        store
            .write(|tx| tx.insert("seat", &[("seat", "A1".into()), ("booked_by", name.into())]))?;
    }
    for client in [&mut alice, &mut bob] {
        let mut c = Session::initiator(client, SessionConfig::default().token(Some("t".into())));
        let mut s = Session::responder(&server, SessionConfig::default(), allow(Access::ReadWrite));
        pump(&mut c, client, &mut s, &mut server)?;
        assert!(c.is_caught_up() && s.is_caught_up());
    }
    // Bob's booking was refused; he learns why on his next sync, along
    // with the correction.
    let mut c = Session::initiator(&bob, SessionConfig::default().token(Some("t".into())));
    let mut s = Session::responder(&server, SessionConfig::default(), allow(Access::ReadWrite));
    pump(&mut c, &mut bob, &mut s, &mut server)?;
    let rejections = bob.rejections()?;
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert!(
        rejections[0].reason.contains("already booked by alice"),
        "{}",
        rejections[0].reason
    );
    assert_eq!(s.stats().rejections_sent + c.stats().rejections_received, 2);
    assert_eq!(bob.digest()?, server.digest()?);
    assert!(alice.rejections()?.is_empty());
    Ok(())
}

#[test]
fn batches_go_under_a_clients_pending_mutations() -> TestResult {
    use crate::store::Transaction;
    let schema = Schema::from_toml_str(SEATS, "seats.toml")?;
    let open = |n: u8, authority: bool| {
        StoreOptions::new()
            .site_id(SiteId::from_bytes([n; 16]))
            .authority(authority)
            .open_in_memory(&schema)
    };
    let mut server = open(1, true)?;
    server.write(|tx| {
        tx.insert(
            "seat",
            &[("seat", "B2".into()), ("booked_by", "carol".into())],
        )?;
        tx.insert(
            "seat",
            &[("seat", "A1".into()), ("booked_by", "dave".into())],
        )
    })?;
    let mut client = open(2, false)?;
    client.register_mutator(
        "book",
        |tx: &mut Transaction<'_>, (seat, who): (String, String)| {
            tx.insert("seat", &[("seat", seat.into()), ("booked_by", who.into())])?;
            Ok(())
        },
    );
    client.mutate("book", &("A1", "alice"))?;
    let seats = |s: &Store| -> crate::Result<Vec<String>> {
        let mut stmt = s
            .conn()
            .prepare("SELECT seat || ':' || booked_by FROM seat ORDER BY seat")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    };
    assert_eq!(seats(&client)?, ["A1:alice"]);

    let mut c = Session::initiator(&client, SessionConfig::default());
    let mut s = Session::responder(&server, SessionConfig::default(), allow_all());
    pump(&mut c, &mut client, &mut s, &mut server)?;
    assert!(c.is_caught_up() && s.is_caught_up());
    // The canonical rows arrived under the pending booking (plain apply
    // would have merged them into it); the authority refused the booking,
    // so it is dropped and recorded; nothing speculative was sent.
    assert_eq!(seats(&client)?, ["A1:dave", "B2:carol"]);
    assert!(client.pending_mutations()?.is_empty());
    assert_eq!(client.mutation_failures()?.len(), 1);
    assert_eq!(seats(&server)?, ["A1:dave", "B2:carol"]);
    assert_eq!(c.stats().rows_sent, 0);
    assert_eq!(client.digest()?, server.digest()?);
    Ok(())
}

fn allow_all() -> Authorize {
    Arc::new(|_| Some(Grant::read_write()))
}

/// An authority and a client of the seats schema, both with the `book`
/// mutator (which fails when the seat is taken).
fn booking_pair() -> crate::Result<(Store, Store)> {
    use crate::store::Transaction;
    let schema = Schema::from_toml_str(SEATS, "seats.toml")?;
    let open = |n: u8, authority: bool| -> crate::Result<Store> {
        let mut store = StoreOptions::new()
            .site_id(SiteId::from_bytes([n; 16]))
            .authority(authority)
            .open_in_memory(&schema)?;
        store.register_mutator(
            "book",
            |tx: &mut Transaction<'_>, (seat, who): (String, String)| {
                tx.insert("seat", &[("seat", seat.into()), ("booked_by", who.into())])?;
                Ok(())
            },
        );
        Ok(store)
    };
    let mut server = open(1, true)?;
    server.write(|tx| {
        tx.insert(
            "seat",
            &[("seat", "B2".into()), ("booked_by", "carol".into())],
        )
    })?;
    Ok((server, open(2, false)?))
}

fn seats(store: &Store) -> crate::Result<Vec<String>> {
    let mut stmt = store
        .conn()
        .prepare("SELECT seat || ':' || booked_by FROM seat ORDER BY seat")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[test]
fn mutations_are_pushed_run_by_the_authority_and_settled_in_one_sync() -> TestResult {
    let (mut server, mut client) = booking_pair()?;
    client.mutate("book", &("A1", "alice"))?;
    client.mutate("book", &("B2", "bob"))?;
    assert_eq!(seats(&client)?, ["A1:alice", "B2:bob"]);

    let mut c = Session::initiator(&client, SessionConfig::default());
    let mut s = Session::responder(&server, SessionConfig::default(), allow_all());
    pump(&mut c, &mut client, &mut s, &mut server)?;
    assert!(c.is_caught_up() && s.is_caught_up());
    assert_eq!(seats(&server)?, ["A1:alice", "B2:carol"]);
    assert_eq!(seats(&client)?, ["A1:alice", "B2:carol"]);
    assert!(client.pending_mutations()?.is_empty());
    let failures = client.mutation_failures()?;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].name, "book");
    assert_eq!(client.digest()?, server.digest()?);
    let (cs, ss) = (c.stats(), s.stats());
    assert_eq!(
        (
            cs.mutations_pushed,
            cs.mutations_acknowledged,
            cs.mutations_rejected
        ),
        (2, 2, 1)
    );
    assert_eq!(ss.mutations_processed, 2);
    // Mutations are not changes: nothing speculative travelled as a row.
    assert_eq!(cs.rows_sent, 0);
    Ok(())
}

#[test]
fn live_sessions_push_new_mutations_and_drop_them_once_settled() -> TestResult {
    let (mut server, mut client) = booking_pair()?;
    let config = SessionConfig::default().live(true);
    let mut c = Session::initiator(&client, config.clone());
    let mut s = Session::responder(&server, config, allow_all());
    pump(&mut c, &mut client, &mut s, &mut server)?;
    assert!(c.is_caught_up());

    client.mutate("book", &("C3", "dan"))?;
    c.local_changed(&client)?;
    pump(&mut c, &mut client, &mut s, &mut server)?;
    assert!(c.is_caught_up() && s.is_caught_up());
    assert_eq!(seats(&server)?, ["B2:carol", "C3:dan"]);
    assert!(client.pending_mutations()?.is_empty());
    assert_eq!(client.digest()?, server.digest()?);
    Ok(())
}

#[test]
fn a_read_only_token_cannot_push_mutations() -> TestResult {
    let (mut server, mut client) = booking_pair()?;
    client.mutate("book", &("A1", "alice"))?;
    let mut c = Session::initiator(&client, SessionConfig::default().token(Some("t".into())));
    let mut s = Session::responder(&server, SessionConfig::default(), allow(Access::ReadOnly));
    pump(&mut c, &mut client, &mut s, &mut server)?;
    // The read-only answer says the server takes no changes: nothing pushed.
    assert_eq!(c.stats().mutations_pushed, 0);
    assert_eq!(client.pending_mutations()?.len(), 1);
    let push = crate::mutator::Push {
        client: client.site_id(),
        mutations: client.pending_mutations()?,
    };
    let result = s.receive(&mut server, Message::Push(push));
    assert!(matches!(result, Err(SyncError::ReadOnly { ref sent }) if sent == "1 mutations"));
    assert_eq!(seats(&server)?, ["B2:carol"]);
    Ok(())
}

#[test]
fn mutations_go_only_to_the_authority() -> TestResult {
    let (_, mut client) = booking_pair()?;
    // A second client of the same authority.
    let mut other = StoreOptions::new()
        .site_id(SiteId::from_bytes([3; 16]))
        .open_in_memory(&Schema::from_toml_str(SEATS, "seats.toml")?)?;
    client.mutate("book", &("A1", "alice"))?;
    let mut c = Session::initiator(&client, SessionConfig::default());
    let mut o = Session::responder(&other, SessionConfig::default(), allow_all());
    pump(&mut c, &mut client, &mut o, &mut other)?;
    assert!(c.is_caught_up() && o.is_caught_up());
    assert_eq!(c.stats().mutations_pushed, 0);
    assert_eq!(client.pending_mutations()?.len(), 1);
    assert!(seats(&other)?.is_empty());

    let push = crate::mutator::Push {
        client: client.site_id(),
        mutations: client.pending_mutations()?,
    };
    let result = o.receive(&mut other, Message::Push(push));
    assert!(matches!(
        result,
        Err(SyncError::Unexpected { got: "Push", .. })
    ));
    assert!(seats(&other)?.is_empty());
    Ok(())
}

/// Delivers what `from` has to say to `to`, and holds back `to`'s
/// answers (a peer that reads but does not acknowledge yet). Returns the
/// batches delivered.
fn deliver_one_way(
    from: &mut Session,
    to: &mut Session,
    store: &mut Store,
    held: &mut Vec<Message>,
) -> Result<usize, SyncError> {
    let mut batches = 0;
    while let Some(m) = from.poll_message() {
        batches += usize::from(matches!(m, Message::Changes(_)));
        to.receive(store, m)?;
    }
    held.extend(std::iter::from_fn(|| to.poll_message()));
    Ok(batches)
}

#[test]
fn a_peer_that_does_not_acknowledge_gets_changes_coalesced_not_queued() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    let config = SessionConfig::default().live(true).window(4);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, Arc::new(|_| Some(Grant::read_write())));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    // b writes 20 times; a reads every batch and acknowledges none.
    let (mut delivered, mut held) = (0, Vec::new());
    for i in 0..20 {
        insert(&mut sb, i..i + 1)?;
        b.local_changed(&sb)?;
        delivered += deliver_one_way(&mut b, &mut a, &mut sa, &mut held)?;
        assert!(!b.has_deferred_changes(), "a batch waits for the window");
    }
    // The window's four went out, one read waits behind them, the other
    // fifteen writes were not even read.
    assert_eq!(delivered, 4);
    assert_eq!(b.stats().batches_sent, 4);
    assert!(!b.is_caught_up());
    // Once a acknowledges, the waiting batch goes and the rest is read in
    // one go.
    for m in held {
        b.receive(&mut sb, m)?;
    }
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(b.has_deferred_changes());
    b.local_changed(&sb)?;
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(!b.has_deferred_changes() && b.is_caught_up() && a.is_caught_up());
    assert_eq!(b.stats().batches_sent, 6, "20 writes in 6 batches");
    assert_eq!(sa.digest()?, sb.digest()?);
    Ok(())
}

/// Tokens `ta` and `tb` of clients "a" and "b"; `tf`, "f", may forward.
/// Each identity may bind `max` sites.
fn identities(max: usize) -> Authorize {
    Arc::new(move |token| {
        let (name, forward) = match token? {
            "ta" => ("a", false),
            "tb" => ("b", false),
            "tf" => ("f", true),
            _ => return None,
        };
        Some(
            Grant::read_write().with_identity(
                identity::Identity::new(name)
                    .max_sites(max)
                    .forward(forward),
            ),
        )
    })
}

fn session_as(
    client: &mut Store,
    relay: &mut Store,
    token: &str,
    authorize: &Authorize,
) -> Result<(Session, Session), SyncError> {
    let mut c = Session::initiator(&*client, SessionConfig::default().token(Some(token.into())));
    let mut r = Session::responder(&*relay, SessionConfig::default(), Arc::clone(authorize));
    pump(&mut c, client, &mut r, relay)?;
    Ok((c, r))
}

#[test]
fn a_hello_as_another_tokens_site_is_refused_before_anything_is_applied() -> TestResult {
    let auth = identities(4);
    let mut relay = store(9)?;
    let mut a = store(1)?;
    insert(&mut a, 0..2)?;
    session_as(&mut a, &mut relay, "ta", &auth)?;
    assert_eq!(relay.site_owner(a.site_id())?.as_deref(), Some("a"));
    let before = relay.digest()?;
    // b opens a database with a's site id and writes "as a".
    let mut forged = store(1)?;
    insert(&mut forged, 10..12)?;
    let err = session_as(&mut forged, &mut relay, "tb", &auth)
        .map(|_| ())
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(&err, SyncError::Identity(IdentityRefusal::Taken { owner, .. }) if owner == "a"),
        "{err:?}"
    );
    assert_eq!(err.notice_code(), Some(NoticeCode::Unauthorized));
    assert!(text.contains("belongs to another token"), "{text}");
    assert!(
        !text.contains("\"a\""),
        "the owner's name is not told: {text}"
    );
    assert_eq!(relay.digest()?, before);
    // a itself still syncs.
    insert(&mut a, 2..3)?;
    session_as(&mut a, &mut relay, "ta", &auth)?;
    assert_eq!(a.digest()?, relay.digest()?);
    Ok(())
}

/// A batch with `changes`, sent by `token`'s client at site `site` after
/// its hello (the relay's answer drained first).
fn send_batch(
    relay: &mut Store,
    token: &str,
    site: u8,
    auth: &Authorize,
    changes: crate::changeset::Changeset,
) -> Result<(), SyncError> {
    let mut r = Session::responder(&*relay, SessionConfig::default(), Arc::clone(auth));
    r.receive(
        relay,
        Message::Hello(message::Hello {
            site: SiteId::from_bytes([site; 16]),
            schema: "shop".into(),
            schema_version: 1,
            token: Some(token.into()),
            accepts_changes: true,
            live: false,
            authority: false,
            namespace: None,
            compression: vec![],
        }),
    )?;
    while r.poll_message().is_some() {}
    r.receive(relay, Message::Changes(message::Batch { seq: 1, changes }))
}

#[test]
fn new_writes_of_a_site_not_bound_to_the_token_are_refused_unless_it_forwards() -> TestResult {
    let auth = identities(4);
    let mut relay = store(9)?;
    let mut a = store(1)?;
    insert(&mut a, 0..2)?;
    session_as(&mut a, &mut relay, "ta", &auth)?;
    // Rows the relay already has, sent again by another token: not new.
    let had = a.changes_since(&crate::version::VersionVector::new())?;
    send_batch(&mut relay, "tb", 2, &auth, had)?;
    // a's new writes, carried by b: refused, nothing applied.
    insert(&mut a, 2..4)?;
    let fresh = a.changes_since(&relay.version_vector())?;
    let before = relay.digest()?;
    let err = send_batch(&mut relay, "tb", 2, &auth, fresh.clone()).expect_err("refused");
    assert!(
        matches!(err, SyncError::Identity(IdentityRefusal::ForeignWrite { site, .. }) if site == a.site_id()),
        "{err:?}"
    );
    assert!(err.to_string().contains("forward = true"), "{err}");
    assert_eq!(relay.digest()?, before);
    // A dot the relay has, reused by a forger on a row it never touched.
    let mut forged = store(1)?;
    insert(&mut forged, 50..51)?;
    let reuse = forged.changes_since(&crate::version::VersionVector::new())?;
    let err = send_batch(&mut relay, "tb", 2, &auth, reuse).expect_err("a reused dot");
    assert!(
        matches!(
            err,
            SyncError::Identity(IdentityRefusal::ForeignWrite { .. })
        ),
        "{err:?}"
    );
    assert_eq!(relay.digest()?, before);
    // A token that may forward carries them.
    send_batch(&mut relay, "tf", 3, &auth, fresh)?;
    assert_eq!(relay.digest()?, a.digest()?);
    Ok(())
}

#[test]
fn a_read_over_the_lag_bound_closes_with_a_notice_to_resync() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    let config = SessionConfig::default()
        .live(true)
        .batch_rows(2)
        .max_lag(2, usize::MAX);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, Arc::new(|_| Some(Grant::read_write())));
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    insert(&mut sb, 0..5)?;
    let err = b
        .local_changed(&sb)
        .expect_err("3 batches over a bound of 2");
    assert!(err.to_string().contains("fell behind: 3 batches"), "{err}");
    assert!(b.is_closed());
    match b.poll_message() {
        Some(Message::Notice(n)) => {
            assert_eq!(n.code, NoticeCode::Busy);
            assert!(n.message.contains("reconnect to resync"), "{}", n.message);
        }
        other => return Err(format!("expected a notice, got {other:?}").into()),
    }
    // A new session resyncs everything (an answer is not a live read).
    let mut a = Session::initiator(&sa, SessionConfig::default());
    let mut b = Session::responder(&sb, SessionConfig::default(), allow_all());
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert_eq!(sa.digest()?, sb.digest()?);
    Ok(())
}

#[test]
fn a_token_binds_sites_up_to_its_limit_and_a_push_must_be_its_sessions() -> TestResult {
    let auth = identities(2);
    let mut relay = StoreOptions::new()
        .site_id(SiteId::from_bytes([9; 16]))
        .authority(true)
        .open_in_memory(&Schema::from_toml_str(SCHEMA, "shop.toml")?)?;
    for n in [1, 2] {
        session_as(&mut store(n)?, &mut relay, "ta", &auth)?;
    }
    let err = session_as(&mut store(3)?, &mut relay, "ta", &auth)
        .map(|_| ())
        .expect_err("over the limit");
    assert!(err.to_string().contains("its limit"), "{err}");
    assert_eq!(
        relay.sites_bound_to("a")?,
        [SiteId::from_bytes([1; 16]), SiteId::from_bytes([2; 16])]
    );
    // b's own site binds; a push for a's site in b's session is refused.
    let mut r = Session::responder(&relay, SessionConfig::default(), Arc::clone(&auth));
    let mut b = store(4)?;
    let mut c = Session::initiator(&b, SessionConfig::default().token(Some("tb".into())));
    pump(&mut c, &mut b, &mut r, &mut relay)?;
    let err = r
        .receive(
            &mut relay,
            Message::Push(crate::mutator::Push {
                client: SiteId::from_bytes([1; 16]),
                mutations: Vec::new(),
            }),
        )
        .expect_err("another site's push");
    assert!(
        matches!(err, SyncError::Identity(IdentityRefusal::OtherSite { .. })),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_counts_queued_mutations_until_the_authority_settles_them() -> TestResult {
    use super::driver::Observe;
    use super::status::{SyncState, SyncStatus, Tracker};
    use std::time::Duration;
    let (mut server, mut client) = booking_pair()?;
    client.mutate("book", &("A1", "alice"))?;
    let shared = SharedStore::new(client);
    let status = Arc::new(tokio::sync::watch::channel(SyncStatus::starting()).0);
    let mut rx = status.subscribe();
    let mut tracker = Tracker::new(shared.clone(), Arc::clone(&status));
    tracker.connecting();
    let within = Duration::from_secs(30);
    tokio::time::timeout(within, rx.wait_for(|s| s.pending_mutations == 1)).await??;
    // No peer said what it has: the changes to deliver are unknown.
    assert_eq!(rx.borrow().pending_changes, None);

    // One sync with the authority, the tracker watching the client's side.
    let mut c = Session::initiator(&*shared.lock(), SessionConfig::default());
    let mut s = Session::responder(&server, SessionConfig::default(), allow_all());
    pump(&mut c, &mut shared.lock(), &mut s, &mut server)?;
    tracker.progress(&c);
    let settled = tokio::time::timeout(
        within,
        rx.wait_for(|s| matches!(s.state, SyncState::Idle) && s.is_settled()),
    )
    .await??
    .clone();
    assert_eq!(settled.pending_changes, Some(0), "{settled}");
    tracker.stopped().await;
    assert!(matches!(rx.borrow().state, SyncState::Stopped));
    assert!(rx.borrow().is_settled());
    Ok(())
}

#[test]
fn an_answer_is_streamed_a_page_at_a_time_within_the_window() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    insert(&mut sb, 0..100)?;
    // A write between the pages (behind and ahead of the cursor) is
    // carried too: ahead by a later page, behind by the put-off live read.
    let config = SessionConfig::default().batch_rows(3).window(2).live(true);
    let mut a = Session::initiator(&sa, config.clone());
    let mut b = Session::responder(&sb, config, allow_all());
    for _ in 0..3 {
        let (m, n) = (a.poll_message(), b.poll_message());
        if let Some(m) = m {
            b.receive(&mut sb, m)?;
        }
        if let Some(n) = n {
            a.receive(&mut sa, n)?;
        }
    }
    sb.write(|tx| tx.increment("item", "k0", "stock", 5))?;
    insert(&mut sb, 200..201)?;
    b.local_changed(&sb)?;
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    if b.has_deferred_changes() {
        b.local_changed(&sb)?;
        pump(&mut a, &mut sa, &mut b, &mut sb)?;
    }
    assert!(a.is_caught_up() && b.is_caught_up());
    assert_eq!(sa.digest()?, sb.digest()?);
    let held = b.stats().max_rows_held;
    assert!(
        held > 0 && held <= 9,
        "held {held} rows, bound (window + 1) × 3"
    );
    Ok(())
}

#[test]
fn a_peer_that_is_not_live_gets_no_unasked_batches() -> TestResult {
    let (mut sa, mut sb) = (store(1)?, store(2)?);
    let mut a = Session::initiator(&sa, SessionConfig::default());
    let mut b = Session::responder(&sb, SessionConfig::default().live(true), allow_all());
    pump(&mut a, &mut sa, &mut b, &mut sb)?;
    assert!(!b.peer().is_some_and(|p| p.live));
    insert(&mut sb, 0..2)?;
    b.local_changed(&sb)?;
    assert!(
        b.poll_message().is_none(),
        "nothing pushed to a one-shot peer"
    );
    Ok(())
}
