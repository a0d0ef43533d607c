//! Helpers shared by the fuzz targets: OSCORE contexts and engines with a fixed key table
//! (as in shared/src/coap/engine/oscore_tests.rs), and a way to apply a fuzzer's byte
//! edits to a valid message.

use arbitrary::{Result, Unstructured};
use pehra_shared::coap::Packet;
use pehra_shared::coap::{
    client_id_context, Config, Engine, Event, IncomingRequest, Request, Response, ServerSecurity,
};
use pehra_shared::oscore::{ContextParams, SecurityContext};
use pehra_shared::security::{self, Identity, KeyTable, PeerKey, Role};
use pehra_shared::Instant;

pub const CLIENT: u8 = 1;
pub const SERVER: u8 = 2;
pub const ALICE_KEY: [u8; 32] = [0xA1; 32];
/// The random ID Context of the client's run.
pub const RUN: u64 = 7;

pub fn alice() -> Identity {
    Identity {
        name: "alice".into(),
        role: Role::Client,
        kid: security::kid(Role::Client, 1),
    }
}

pub fn server_kid() -> Vec<u8> {
    security::broker_kid(1)
}

pub fn server_security() -> ServerSecurity {
    let mut keys = KeyTable::new();
    keys.insert(PeerKey {
        identity: alice(),
        secret: security::pairwise_secret(&ALICE_KEY, &server_kid()),
    });
    ServerSecurity::new(server_kid(), keys, 0)
}

/// Alice's context towards the server (`client`) or the server's towards Alice.
pub fn context(client: bool) -> SecurityContext {
    let secret = security::pairwise_secret(&ALICE_KEY, &server_kid());
    let id_context = client_id_context(RUN);
    let (me, peer) = if client {
        (alice().kid, server_kid())
    } else {
        (server_kid(), alice().kid)
    };
    let params = ContextParams {
        master_secret: &secret,
        master_salt: &[],
        id_context: Some(&id_context),
        sender_id: &me,
        recipient_id: &peer,
    };
    SecurityContext::new(&params, None).expect("context derives")
}

/// A client engine with Alice's context and a server engine with the key table.
pub struct Pair {
    pub now: Instant,
    pub client: Engine<u8>,
    pub server: Engine<u8>,
    /// Every datagram the client sent, in order.
    pub client_sent: Vec<Vec<u8>>,
    /// Requests the server application got.
    pub served: Vec<IncomingRequest<u8>>,
    /// Whether to deliver the client's datagrams (off: they are only recorded).
    pub deliver: bool,
}

impl Pair {
    pub fn new() -> Pair {
        let mut client = Engine::new(Config::default(), [1; 32]);
        client.secure_peer(SERVER, context(true));
        let mut server = Engine::new(Config::default(), [2; 32]);
        server.set_server_security(server_security());
        Pair {
            now: Instant::from_millis(1_000),
            client,
            server,
            client_sent: Vec::new(),
            served: Vec::new(),
            deliver: true,
        }
    }

    /// Delivers everything until both sides are quiet (bounded).
    pub fn run(&mut self) {
        for _ in 0..32 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                self.client_sent.push(t.bytes.clone());
                if self.deliver {
                    self.server.handle_datagram(self.now, CLIENT, &t.bytes);
                }
            }
            moved |= self.serve();
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                assert!(Packet::from_bytes(&t.bytes).is_ok());
                self.client.handle_datagram(self.now, SERVER, &t.bytes);
            }
            while self.client.poll_event().is_some() {
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Answers every request the server application got; whether there was one.
    pub fn serve(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.server.poll_event() {
            any = true;
            let Event::Request(r) = e else { continue };
            let mut body = r.request.path().into_bytes();
            body.extend_from_slice(r.request.payload());
            self.server.respond(self.now, r.id, Response::content(body));
            self.served.push(r);
        }
        let _ = self.server.poll_persist();
        any
    }

    /// Sends `request` and runs the exchange (the first one does the Echo round trip).
    pub fn request(&mut self, request: Request) {
        self.client.request(self.now, SERVER, request);
        self.run();
    }
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

/// Applies up to 8 edits chosen by the fuzzer to `bytes`: flip, set, insert, delete,
/// truncate, or splice in fuzzer bytes.
pub fn edit(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>) -> Result<()> {
    let n = u.int_in_range(0..=8u8)?;
    for _ in 0..n {
        let at = if bytes.is_empty() {
            0
        } else {
            u.int_in_range(0..=bytes.len() - 1)?
        };
        match u.int_in_range(0..=5u8)? {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << u.int_in_range(0..=7u8)?,
            1 if !bytes.is_empty() => bytes[at] = u.arbitrary()?,
            2 => bytes.insert(at.min(bytes.len()), u.arbitrary()?),
            3 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            5 => {
                let len = u.int_in_range(0..=16usize)?;
                let new = u.bytes(len.min(u.len()))?.to_vec();
                let end = (at + u.int_in_range(0..=4usize)?).min(bytes.len());
                bytes.splice(at.min(bytes.len())..end, new);
            }
            _ => {}
        }
    }
    Ok(())
}
