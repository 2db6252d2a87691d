//! The node's DNS server over real sockets on loopback addresses (high or
//! ephemeral ports, no root): answers, TTL, a view change seen at once, TCP,
//! listeners that come and go, garbage, and forwarding to a fake upstream.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use stackd_agent::dns::{DnsConfig, DnsServer, OwnAddresses, TTL, Upstreams, own_addresses};
use stackd_core::model::EndpointMode;
use stackd_core::net::{NetView, NodeView, ServiceNet, ServiceView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const WAIT: Duration = Duration::from_secs(3);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// One network `shop_default`, 127.0.0.0/29 (so 127.0.0.1–7 are on it), this
/// node's gateway 127.0.0.1; service `web` (vip) with `vip`, alias `www`
/// and `endpoints`; service `db` (dnsrr) with two endpoints.
fn view(vip: &str, endpoints: &[&str]) -> NodeView {
    NodeView {
        networks: vec![NetView {
            name: "shop_default".into(),
            stack: "shop".into(),
            key: "default".into(),
            subnet: "127.0.0.0/29".parse().expect("subnet"),
            vni: 1,
            gateway: Ipv4Addr::LOCALHOST,
            internal: false,
            peers: vec![],
        }],
        services: vec![
            ServiceView {
                id: "s1".into(),
                stack: "shop".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                networks: vec![ServiceNet {
                    network: "shop_default".into(),
                    vip: Some(ip(vip)),
                    aliases: vec!["www".into()],
                    endpoints: endpoints.iter().map(|e| ip(e)).collect(),
                }],
            },
            ServiceView {
                id: "s2".into(),
                stack: "shop".into(),
                name: "db".into(),
                endpoint_mode: EndpointMode::Dnsrr,
                networks: vec![ServiceNet {
                    network: "shop_default".into(),
                    vip: None,
                    aliases: vec![],
                    endpoints: vec![ip("10.0.0.21"), ip("10.0.0.22")],
                }],
            },
        ],
        published: Vec::new(),
    }
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m
}

/// Asks `server` over UDP from `from` (a loopback address): the answer.
async fn ask_udp_from(server: SocketAddr, from: Ipv4Addr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind((from, 0)).await.expect("client socket");
    let q = query(name, qtype);
    sock.send_to(&q.to_vec().expect("encode"), server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.expect("an answer in time").expect("recv");
    let m = Message::from_vec(&buf[..n]).expect("decodable answer");
    assert_eq!(m.metadata.id, q.metadata.id, "the answer carries the query's id");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_udp_from(server, Ipv4Addr::LOCALHOST, name, qtype).await
}

/// Asks `server` over TCP (two-byte length, then the message).
async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s =
        tokio::time::timeout(WAIT, TcpStream::connect(server)).await.expect("connect in time").expect("connect");
    let q = query(name, qtype).to_vec().expect("encode");
    let len = u16::try_from(q.len()).expect("short query");
    s.write_all(&len.to_be_bytes()).await.expect("write");
    s.write_all(&q).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut len)).await.expect("an answer in time").expect("read");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.expect("read");
    Message::from_vec(&buf).expect("decodable answer")
}

fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn offline() -> DnsConfig {
    DnsConfig { port: 0, upstreams: Upstreams::Servers(vec![]), upstream_timeout: Duration::from_secs(1) }
}

/// A server on 127.0.0.1 (ephemeral port) with [`view`].
fn start(config: DnsConfig) -> (DnsServer, SocketAddr) {
    let mut server = DnsServer::new(config);
    server.update(&view("10.0.0.200", &["10.0.0.11", "10.0.0.12"]), &OwnAddresses::new()).expect("listen");
    let addrs = server.listen_addrs();
    assert_eq!(addrs.len(), 1);
    (server, addrs[0])
}

#[tokio::test]
async fn answers_over_udp_with_a_one_second_ttl_and_follows_the_view_at_once() {
    let (server, addr) = start(offline());
    assert_eq!(TTL, 1);

    let m = ask_udp(addr, "web", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), vec![ip("10.0.0.200")]);
    assert!(m.answers.iter().all(|r| r.ttl == 1), "{:?}", m.answers);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "web.",
        "the owner name is the question's (names on the wire are absolute)"
    );

    let m = ask_udp(addr, "Shop_Web", RecordType::A).await;
    assert_eq!(addrs(&m), vec![ip("10.0.0.200")]);
    assert_eq!(m.answers[0].name.to_ascii(), "Shop_Web.", "the question's case is kept");
    assert_eq!(addrs(&ask_udp(addr, "www", RecordType::A).await), vec![ip("10.0.0.200")]);
    assert_eq!(addrs(&ask_udp(addr, "tasks.web", RecordType::A).await), vec![ip("10.0.0.11"), ip("10.0.0.12")]);

    // AAAA of a known name: NOERROR, nothing.
    let m = ask_udp(addr, "web", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());

    // dnsrr: both endpoints, the first one turning between answers.
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let m = ask_udp(addr, "db", RecordType::A).await;
        assert_eq!(addrs(&m), vec![ip("10.0.0.21"), ip("10.0.0.22")]);
        let RData::A(A(first)) = m.answers[0].data else { panic!("an A record") };
        firsts.insert(first);
    }
    assert_eq!(firsts.len(), 2, "the order turns");

    // The view changes: the next question sees it.
    server.set_view(&view("10.0.0.201", &["10.0.0.13"]), &OwnAddresses::new());
    assert_eq!(addrs(&ask_udp(addr, "web", RecordType::A).await), vec![ip("10.0.0.201")]);
    assert_eq!(addrs(&ask_udp(addr, "tasks.web", RecordType::A).await), vec![ip("10.0.0.13")]);
    server.set_view(&view("10.0.0.201", &[]), &OwnAddresses::new());
    let m = ask_udp(addr, "tasks.web", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_eq!(addrs(&ask_udp(addr, "web", RecordType::A).await), vec![ip("10.0.0.201")], "the VIP stays");
}

#[tokio::test]
async fn answers_over_tcp() {
    let (_server, addr) = start(offline());
    let m = ask_tcp(addr, "shop_web", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), vec![ip("10.0.0.200")]);
    assert_eq!(m.answers[0].ttl, 1);
    assert_eq!(addrs(&ask_tcp(addr, "tasks.db", RecordType::A).await), vec![ip("10.0.0.21"), ip("10.0.0.22")]);
}

#[tokio::test]
async fn askers_off_the_networks_are_refused_and_own_addresses_count() {
    let (server, addr) = start(offline());
    // 127.0.0.9 is outside 127.0.0.0/29.
    let m = ask_udp_from(addr, ip("127.0.0.9"), "web", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    // Once it is one of the node's own containers on shop_default, it is answered.
    let own = own_addresses([&BTreeMap::from([("shop_default".to_string(), ip("127.0.0.9"))])]);
    server.set_view(&view("10.0.0.200", &["10.0.0.11"]), &own);
    assert_eq!(addrs(&ask_udp_from(addr, ip("127.0.0.9"), "web", RecordType::A).await), vec![ip("10.0.0.200")]);
}

#[tokio::test]
async fn garbage_gets_no_crash() {
    let (_server, addr) = start(offline());
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("socket");
    for junk in
        [&b""[..], &[0u8; 3], &[0xff; 12], &[0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f], &[0xab; 600]]
    {
        sock.send_to(junk, addr).await.expect("send");
    }
    // Over TCP: a length beyond what follows, then a closed connection.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.expect("write");
    drop(s);
    // Still answering.
    assert_eq!(addrs(&ask_udp(addr, "web", RecordType::A).await), vec![ip("10.0.0.200")]);
    assert_eq!(addrs(&ask_tcp(addr, "web", RecordType::A).await), vec![ip("10.0.0.200")]);
}

#[tokio::test]
async fn listeners_follow_the_gateways() {
    let mut server = DnsServer::new(offline());
    server.set_view(&view("10.0.0.200", &["10.0.0.11"]), &OwnAddresses::new());
    server.set_listeners([ip("127.0.0.1"), ip("127.0.0.2")]).expect("listen");
    let addrs_now = server.listen_addrs();
    assert_eq!(addrs_now.len(), 2);
    for a in &addrs_now {
        assert_eq!(addrs(&ask_udp(*a, "web", RecordType::A).await), vec![ip("10.0.0.200")], "{a}");
    }
    // 127.0.0.1 goes away; 127.0.0.2 keeps its listener (same port).
    server.set_listeners([ip("127.0.0.2")]).expect("listen");
    assert_eq!(server.listen_addrs(), vec![addrs_now[1]]);
    let gone = addrs_now[0];
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(gone).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{gone} still accepts connections");
    assert_eq!(addrs(&ask_tcp(addrs_now[1], "web", RecordType::A).await), vec![ip("10.0.0.200")]);
    // An address that is not this host's: an error, the others unharmed.
    let err = server.set_listeners([ip("127.0.0.2"), ip("192.0.2.1")]).expect_err("192.0.2.1 is not local");
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
    assert_eq!(server.listen_addrs(), vec![addrs_now[1]]);
}

/// A tiny upstream on 127.0.0.1: `example.test` → 192.0.2.7 (TTL 300),
/// `missing.test` → NXDOMAIN with an SOA, anything else → REFUSED. Counts
/// the questions it got.
async fn fake_upstream(answer: Ipv4Addr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("upstream socket");
    let addr = sock.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let Some(query) = q.queries.first() else { continue };
            let name = query.name().to_ascii().to_ascii_lowercase();
            if name == "example.test." && query.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(query.name().clone(), 300, RData::A(A(answer))));
            } else if name == "missing.test." {
                r.metadata.response_code = ResponseCode::NXDomain;
                let zone = Name::from_ascii("test.").expect("zone");
                let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, 30);
                r.add_authority(Record::from_rdata(zone, 30, RData::SOA(soa)));
            } else if name != "example.test." {
                r.metadata.response_code = ResponseCode::Refused;
            }
            let Ok(bytes) = r.to_vec() else { continue };
            let _ = sock.send_to(&bytes, from).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn other_names_are_forwarded_upstream() {
    let (upstream, task) = fake_upstream(ip("192.0.2.7")).await;
    let (_server, addr) = start(DnsConfig {
        upstreams: Upstreams::Servers(vec![upstream]),
        upstream_timeout: Duration::from_secs(1),
        ..offline()
    });

    let m = ask_udp(addr, "example.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), vec![ip("192.0.2.7")]);
    assert!(m.answers[0].ttl > 1, "the upstream's TTL, not ours: {}", m.answers[0].ttl);

    let m = ask_tcp(addr, "example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec![ip("192.0.2.7")]);

    let m = ask_udp(addr, "missing.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::SOA), "the SOA is passed on: {m:?}");

    // Known names are still ours.
    assert_eq!(addrs(&ask_udp(addr, "web", RecordType::A).await), vec![ip("10.0.0.200")]);

    // The upstream is gone: SERVFAIL.
    task.abort();
    let _ = task.await;
    let m = ask_udp(addr, "other.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn without_upstreams_forwarded_names_get_servfail() {
    let (_server, addr) = start(offline());
    let m = ask_udp(addr, "example.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_stacks_own_upstreams_take_over_for_its_containers() {
    let (node_upstream, _t1) = fake_upstream(ip("192.0.2.7")).await;
    let (stack_upstream, _t2) = fake_upstream(ip("198.51.100.9")).await;
    let (server, addr) = start(DnsConfig {
        upstreams: Upstreams::Servers(vec![node_upstream]),
        upstream_timeout: Duration::from_secs(1),
        ..offline()
    });
    assert_eq!(addrs(&ask_udp(addr, "example.test", RecordType::A).await), vec![ip("192.0.2.7")]);
    server.set_stack_upstreams("shop", &[stack_upstream]);
    // A fresh name (the node's resolver may have cached the first one).
    assert_eq!(addrs(&ask_udp(addr, "EXAMPLE.test", RecordType::A).await), vec![ip("198.51.100.9")]);
    server.set_stack_upstreams("shop", &[]);
    assert_eq!(addrs(&ask_udp(addr, "example.test", RecordType::A).await), vec![ip("192.0.2.7")]);
}
