//! The driver of the ensemble leader's health watch ([`pehra_zookeeper::ensemble::health`]), run on
//! the leader only, beside the controller: samples the leader's own health, asks the
//! other members theirs only when it wants to hand over, and asks its own member to
//! transfer the leadership.

use crate::handover::HandoverConfig;
use pehra_shared::coap::Config as CoapConfig;
use pehra_shared::security::credentials::Credentials;
use pehra_shared::time::Instant;
use pehra_zookeeper::client::{Client, ZkError};
use pehra_zookeeper::ensemble::health::{HealthSource, HealthWatch, Peer, SAMPLE_EVERY};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Watches the leader's health while it runs (on the leader only): see the module docs.
/// `own` is this member's address, `members` every member's; returns only on an error
/// making the clients.
pub async fn watch_leader_health(
    own_id: u64,
    members: BTreeMap<u64, SocketAddr>,
    credentials: Option<std::sync::Arc<Credentials>>,
    source: HealthSource,
    config: HandoverConfig,
) -> Result<(), ZkError> {
    let quick = CoapConfig {
        ack_timeout: Duration::from_millis(300),
        max_retransmit: 1,
        ..CoapConfig::default()
    };
    let mut clients = BTreeMap::new();
    for (&id, &addr) in &members {
        let client =
            Client::without_session_secured(addr, quick.clone(), credentials.as_deref()).await?;
        clients.insert(id, client);
    }
    let Some(own) = clients.get(&own_id) else {
        return Ok(());
    };
    let mut watch = HealthWatch::new(config);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::from_micros(started.elapsed().as_micros() as u64);
        let own_index = source.index();
        if !watch.handle_sample(now, own_index) {
            continue;
        }
        let Ok(Some(status)) = own.ensemble_status().await else {
            watch.handle_no_candidate(now);
            continue;
        };
        if status.role != "leader" {
            continue;
        }
        let mut peers = Vec::new();
        for member in status.members.iter().filter(|m| m.id != own_id) {
            let index = match clients.get(&member.id) {
                Some(client) => client
                    .ensemble_status()
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.health_index),
                None => None,
            };
            peers.push(Peer {
                id: member.id,
                index,
                matched: member.matched.unwrap_or(0),
                rtt_us: member.rtt_us,
            });
        }
        let class = config.nhi.class_of(own_index).as_str();
        match watch.choose(own_index, &peers) {
            Some(to) => match own.transfer_leadership(Some(to)).await {
                Ok(started) => {
                    tracing::warn!(
                        own_index,
                        class,
                        to = started.to,
                        "ensemble: this leader's health fell, handing the leadership over"
                    );
                    watch.handle_handed_over(now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, to, "ensemble: a health handover was refused");
                    watch.handle_no_candidate(now);
                }
            },
            None => {
                tracing::info!(
                    own_index,
                    class,
                    ?peers,
                    "ensemble: this leader's health fell, but no member is healthier: staying"
                );
                watch.handle_no_candidate(now);
            }
        }
    }
}
