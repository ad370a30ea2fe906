//! Protocol 4 over real connections: compressed bodies only for a peer
//! that offered a codec, a compressed batch that lies about its size
//! refused by a relay (an attack by a peer with a valid token), and a
//! peer of protocol 3 still syncing with a relay of protocol 4.

mod common;

use common::{inventory, site, TestResult};
use meldb::codec::{
    decode_message, encode_message_as, frame_compressed_batch, message_header, Compression,
    ProtocolVersion, HEADER_LEN, MAX_MESSAGE_PAYLOAD,
};
use meldb::sync::message::{Batch, Hello, Want};
use meldb::sync::{
    sync_once_tcp, Connection, Grant, Message, NoticeCode, Relay, RelayConfig, SessionConfig,
    SharedStore, Tokens,
};
use meldb::{StoreOptions, VersionVector};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(60);

fn shared(n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open_in_memory(&inventory())?,
    ))
}

fn insert(store: &SharedStore, n: usize) -> meldb::Result<()> {
    store.write(|tx| {
        for i in 0..n {
            let sku = format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
            );
            tx.insert("item", &[("sku", sku.into())])?;
        }
        Ok(())
    })
}

fn rows(store: &SharedStore) -> meldb::Result<i64> {
    Ok(store
        .lock()
        .conn()
        .query_row("SELECT count(*) FROM item", [], |r| r.get(0))?)
}

fn hello(n: u8, token: Option<&str>, compression: Vec<Compression>) -> Message {
    Message::Hello(Hello {
        site: site(n),
        schema: inventory().name.clone(),
        schema_version: inventory().version,
        token: token.map(str::to_string),
        accepts_changes: true,
        live: false,
        authority: false,
        namespace: None,
        compression,
    })
}

async fn relay(
    store: SharedStore,
) -> Result<(String, watch::Sender<bool>), Box<dyn std::error::Error>> {
    let mut tokens = Tokens::new();
    tokens.add("till", "rw-secret", Grant::read_write());
    let relay = Relay::bind(store, "127.0.0.1:0", RelayConfig::default().tokens(tokens)).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(relay.run(shutdown));
    Ok((addr, stop))
}

/// Reads frames until the relay closes or `until` says stop; returns
/// each frame's protocol version with the message.
async fn read_all(
    stream: &mut TcpStream,
    until: impl Fn(&Message) -> bool,
) -> Result<Vec<(u16, Message)>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        match tokio::time::timeout(PATIENCE, stream.read_exact(&mut header)).await? {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e.into()),
        }
        let (version, len) = message_header(&header, MAX_MESSAGE_PAYLOAD)?;
        let mut frame = header.to_vec();
        frame.resize(HEADER_LEN + len, 0);
        stream.read_exact(&mut frame[HEADER_LEN..]).await?;
        let message = decode_message(&frame, MAX_MESSAGE_PAYLOAD)?;
        let stop = until(&message);
        out.push((version.number(), message));
        if stop {
            return Ok(out);
        }
    }
}

/// The attack: a peer with a valid token sends a batch whose compressed
/// body claims 4 GiB, or decompresses to more than it claims. Must not
/// happen: an allocation of the claim, a panic, anything applied. The
/// relay answers a protocol notice naming the body and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_batch_that_lies_about_its_size_is_refused_and_nothing_applied() -> TestResult
{
    let store = shared(100)?;
    let (addr, stop) = relay(store.clone()).await?;
    let v4 = ProtocolVersion::NEWEST;
    for (claimed, plain, says) in [
        (
            4u64 << 30,
            vec![7u8; 64],
            "claims 4294967296 bytes decompressed",
        ),
        (
            100,
            vec![0u8; 1 << 20],
            "claims 100 bytes decompressed but its zstd frame declares 1048576",
        ),
    ] {
        let mut stream = TcpStream::connect(addr.as_str()).await?;
        let mut bytes = encode_message_as(
            &hello(42, Some("rw-secret"), Compression::ACCEPTED.to_vec()),
            v4,
        );
        bytes.extend_from_slice(&frame_compressed_batch(1, claimed, &plain));
        stream.write_all(&bytes).await?;
        let got = read_all(&mut stream, |m| matches!(m, Message::Notice(_))).await?;
        let notice = got.iter().find_map(|(_, m)| match m {
            Message::Notice(n) => Some(n.clone()),
            _ => None,
        });
        let notice = notice.ok_or("no notice")?;
        assert_eq!(notice.code, NoticeCode::Protocol, "{}", notice.message);
        assert!(notice.message.contains(says), "{}", notice.message);
        assert!(
            notice.message.contains("Changes body"),
            "{}",
            notice.message
        );
    }
    assert_eq!(rows(&store)?, 0, "nothing applied");
    // The relay keeps serving an honest client.
    let honest = shared(1)?;
    insert(&honest, 10)?;
    sync_once_tcp(
        &honest,
        addr.as_str(),
        SessionConfig::default().token(Some("rw-secret".into())),
    )
    .await?;
    assert_eq!(rows(&store)?, 10);
    stop.send(true)?;
    Ok(())
}

/// A peer whose hello offered no codec gets every body plain (the bytes
/// it receives are exactly the plain frames'), while the side that offered
/// one gets the same batch compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_offered_no_compression_is_never_sent_compressed_bodies() -> TestResult {
    let source = shared(1)?;
    insert(&source, 2_000)?;
    let changes = source.lock().changes_since(&VersionVector::new())?;
    let batch = Message::Changes(Batch { seq: 1, changes });
    let plain = encode_message_as(&batch, ProtocolVersion::NEWEST).len() as u64;

    let (mut plain_side, mut offering) = Connection::pair(MAX_MESSAGE_PAYLOAD);
    plain_side.send(&hello(1, None, vec![])).await?;
    offering
        .send(&hello(2, None, Compression::ACCEPTED.to_vec()))
        .await?;
    assert!(matches!(
        plain_side.recv().await.ok_or("closed")??,
        Message::Hello(_)
    ));
    assert!(matches!(
        offering.recv().await.ok_or("closed")??,
        Message::Hello(_)
    ));
    let (before_plain, before_offering) =
        (plain_side.counts().received(), offering.counts().received());

    offering.send(&batch).await?;
    plain_side.send(&batch).await?;
    assert_eq!(plain_side.recv().await.ok_or("closed")??, batch);
    assert_eq!(offering.recv().await.ok_or("closed")??, batch);
    let to_plain = plain_side.counts().received() - before_plain;
    let to_offering = offering.counts().received() - before_offering;
    assert_eq!(
        to_plain, plain,
        "the peer that offered nothing got the plain frame"
    );
    assert!(
        to_offering * 3 < plain * 2,
        "compressed: {to_offering} of {plain} bytes"
    );
    Ok(())
}

/// A peer of protocol 3 (the previous release) syncs with this build's
/// relay: it is answered in protocol 3 only, bodies plain, and gets
/// every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_peer_syncs_with_a_version_4_relay() -> TestResult {
    let store = shared(100)?;
    insert(&store, 3_000)?;
    let (addr, stop) = relay(store.clone()).await?;
    let v3 = ProtocolVersion::new(3)?;
    let mut stream = TcpStream::connect(addr.as_str()).await?;
    let mut bytes = encode_message_as(&hello(5, Some("rw-secret"), vec![]), v3);
    bytes.extend_from_slice(&encode_message_as(
        &Message::Want(Want {
            id: 1,
            have: VersionVector::new(),
            first_pending: None,
        }),
        v3,
    ));
    stream.write_all(&bytes).await?;
    let got = read_all(
        &mut stream,
        |m| matches!(m, Message::Sent(s) if s.want == 1),
    )
    .await?;
    assert!(
        got.iter().all(|(v, _)| *v == 3),
        "every frame in protocol 3"
    );
    let received: usize = got
        .iter()
        .map(|(_, m)| match m {
            Message::Changes(b) => b.changes.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(received, 3_000);
    assert!(matches!(&got[0].1, Message::Hello(h) if h.compression.is_empty()));
    // And a peer of this build syncs with the same relay in protocol 4.
    let current = shared(6)?;
    sync_once_tcp(
        &current,
        addr.as_str(),
        SessionConfig::default().token(Some("rw-secret".into())),
    )
    .await?;
    assert_eq!(rows(&current)?, 3_000);
    stop.send(true)?;
    Ok(())
}
