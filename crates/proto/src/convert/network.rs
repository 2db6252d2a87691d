//! A node's network view: `NetworkView` (core `net::NodeView`), `NetView`,
//! `Peer`, `ServiceView`, `ServiceNet`. Addresses travel as text.

use std::net::Ipv4Addr;

use stackd_core::net;

use super::{ConvertError, port, wire_enum};
use crate::v1;

fn ip(field: &'static str, value: String) -> Result<Ipv4Addr, ConvertError> {
    value.parse().map_err(|_| ConvertError::Invalid { field, value })
}

fn ips(field: &'static str, values: Vec<String>) -> Result<Vec<Ipv4Addr>, ConvertError> {
    values.into_iter().map(|v| ip(field, v)).collect()
}

impl From<&net::NodeView> for v1::NetworkView {
    fn from(value: &net::NodeView) -> Self {
        Self {
            networks: value.networks.iter().map(v1::NetView::from).collect(),
            services: value.services.iter().map(v1::ServiceView::from).collect(),
            published: value
                .published
                .iter()
                .map(|p| v1::PublishedView {
                    service: p.service.clone(),
                    port: u32::from(p.port),
                    protocol: v1::Protocol::from(p.protocol).into(),
                    target: u32::from(p.target),
                    endpoints: p.endpoints.iter().map(peer).collect(),
                    proxy_protocol: p.proxy_protocol,
                    reachable: p.reachable.iter().map(peer).collect(),
                })
                .collect(),
        }
    }
}

fn peer(p: &net::Peer) -> v1::Peer {
    v1::Peer { ip: p.ip.to_string(), node: p.node.to_string() }
}

fn from_peer(p: v1::Peer) -> Result<net::Peer, ConvertError> {
    Ok(net::Peer { ip: ip("Peer.ip", p.ip)?, node: ip("Peer.node", p.node)? })
}

impl From<&net::NetView> for v1::NetView {
    fn from(value: &net::NetView) -> Self {
        Self {
            name: value.name.clone(),
            stack: value.stack.clone(),
            key: value.key.clone(),
            subnet: value.subnet.to_string(),
            vni: value.vni,
            gateway: value.gateway.to_string(),
            internal: value.internal,
            peers: value.peers.iter().map(|p| v1::Peer { ip: p.ip.to_string(), node: p.node.to_string() }).collect(),
        }
    }
}

impl From<&net::ServiceView> for v1::ServiceView {
    fn from(value: &net::ServiceView) -> Self {
        Self {
            id: value.id.clone(),
            stack: value.stack.clone(),
            name: value.name.clone(),
            endpoint_mode: v1::EndpointMode::from(value.endpoint_mode).into(),
            networks: value
                .networks
                .iter()
                .map(|n| v1::ServiceNet {
                    network: n.network.clone(),
                    vip: n.vip.map(|ip| ip.to_string()),
                    aliases: n.aliases.clone(),
                    endpoints: n.endpoints.iter().map(Ipv4Addr::to_string).collect(),
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::NetworkView> for net::NodeView {
    type Error = ConvertError;

    fn try_from(value: v1::NetworkView) -> Result<Self, ConvertError> {
        Ok(Self {
            networks: value.networks.into_iter().map(net::NetView::try_from).collect::<Result<_, _>>()?,
            services: value.services.into_iter().map(net::ServiceView::try_from).collect::<Result<_, _>>()?,
            published: value
                .published
                .into_iter()
                .map(|p| {
                    Ok(net::PublishedView {
                        service: p.service,
                        port: port("PublishedView.port", p.port)?,
                        protocol: wire_enum::<v1::Protocol>("PublishedView.protocol", p.protocol)?.into(),
                        target: port("PublishedView.target", p.target)?,
                        proxy_protocol: p.proxy_protocol,
                        endpoints: p.endpoints.into_iter().map(from_peer).collect::<Result<_, _>>()?,
                        reachable: p.reachable.into_iter().map(from_peer).collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        })
    }
}

impl TryFrom<v1::NetView> for net::NetView {
    type Error = ConvertError;

    fn try_from(value: v1::NetView) -> Result<Self, ConvertError> {
        Ok(Self {
            name: value.name,
            stack: value.stack,
            key: value.key,
            subnet: value
                .subnet
                .parse()
                .map_err(|_| ConvertError::Invalid { field: "NetView.subnet", value: value.subnet.clone() })?,
            vni: value.vni,
            gateway: ip("NetView.gateway", value.gateway)?,
            internal: value.internal,
            peers: value.peers.into_iter().map(from_peer).collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<v1::ServiceView> for net::ServiceView {
    type Error = ConvertError;

    fn try_from(value: v1::ServiceView) -> Result<Self, ConvertError> {
        Ok(Self {
            id: value.id,
            stack: value.stack,
            name: value.name,
            endpoint_mode: wire_enum::<v1::EndpointMode>("ServiceView.endpoint_mode", value.endpoint_mode)?.into(),
            networks: value
                .networks
                .into_iter()
                .map(|n| {
                    Ok(net::ServiceNet {
                        network: n.network,
                        vip: n.vip.map(|v| ip("ServiceNet.vip", v)).transpose()?,
                        aliases: n.aliases,
                        endpoints: ips("ServiceNet.endpoints", n.endpoints)?,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_goes_over_the_wire_and_back() {
        let view = net::NodeView {
            networks: vec![net::NetView {
                name: "shop_default".into(),
                stack: "shop".into(),
                key: "default".into(),
                subnet: "10.192.0.0/20".parse().expect("subnet"),
                vni: 0x10_0000,
                gateway: Ipv4Addr::new(10, 192, 0, 1),
                internal: true,
                peers: vec![net::Peer { ip: Ipv4Addr::new(10, 192, 0, 66), node: Ipv4Addr::new(10, 9, 0, 2) }],
            }],
            services: vec![net::ServiceView {
                id: "s1".into(),
                stack: "shop".into(),
                name: "web".into(),
                endpoint_mode: stackd_core::model::EndpointMode::Dnsrr,
                networks: vec![net::ServiceNet {
                    network: "shop_default".into(),
                    vip: Some(Ipv4Addr::new(10, 192, 15, 1)),
                    aliases: vec!["www".into()],
                    endpoints: vec![Ipv4Addr::new(10, 192, 0, 2)],
                }],
            }],
            published: vec![net::PublishedView {
                service: "shop_web".into(),
                port: 18080,
                protocol: stackd_core::model::Protocol::Udp,
                target: 8080,
                proxy_protocol: true,
                endpoints: vec![net::Peer { ip: Ipv4Addr::new(10, 192, 0, 66), node: Ipv4Addr::new(10, 9, 0, 2) }],
                reachable: vec![
                    net::Peer { ip: Ipv4Addr::new(10, 192, 0, 66), node: Ipv4Addr::new(10, 9, 0, 2) },
                    net::Peer { ip: Ipv4Addr::new(10, 192, 0, 67), node: Ipv4Addr::new(10, 9, 0, 2) },
                ],
            }],
        };
        let wire = v1::NetworkView::from(&view);
        assert_eq!(net::NodeView::try_from(wire.clone()), Ok(view));
        let mut bad = wire;
        bad.networks[0].gateway = "nope".into();
        assert!(net::NodeView::try_from(bad).is_err());
    }
}
