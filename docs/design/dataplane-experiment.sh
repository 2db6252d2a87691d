#!/usr/bin/env bash
# dataplane-experiment.sh — the data path of one flat stack network across nodes, proven
# with plain commands (issue 14, docs/design/network-plan.md). Not part of the test-suite:
# an executable record of what the agent has to set up, and of what works on this machine
# (Docker 20.10, kernel 6.x, iptables-nft, no IPVS, no `dummy` link type).
#
#   dataplane-experiment.sh up      # LAN bridge, 3 "nodes" (netns), 2 engines, networks, VXLAN, VIPs, mesh
#   dataplane-experiment.sh test    # prints PASS/FAIL per check, then "N passed, N failed"
#   dataplane-experiment.sh down    # removes everything (engines, namespaces, bridge, rules, /tmp/xexp)
#
#   MASQ=true dataplane-experiment.sh up   # keep Docker's own MASQUERADE rule instead of ours
#
# Root only. Needs: the engine recipe /work/shared/tools/engine-in-netns.sh, busybox-static
# (for the image), dnsmasq-base (stand-in for the node's DNS server), python3 (UDP test
# peers, run from the host inside the containers' network namespaces). Optional: conntrack.
#
# Topology (all private, inside this machine):
#   host: bridge xbr0 10.239.0.254/24 = "the LAN" (MTU 1400 like the real interfaces here)
#   xn1 10.239.0.1  engine e1  network N slice 10.200.0.0/26  gw 10.200.0.1   M slice 10.200.16.0/26 gw .16.1
#   xn2 10.239.0.2  engine e2  network N slice 10.200.0.64/26 gw 10.200.0.65  M slice 10.200.16.64/26 gw .16.65
#   xn3 10.239.0.3  no engine, no network: a routing-mesh entry node only (variant b)
#   N = 10.200.0.0/20 VNI 4242 bridge stk-n vxlan vx-n;  M = 10.200.16.0/20 VNI 4243 bridge stk-m vxlan vx-m
#   containers: c1 10.200.0.10, c1b 10.200.0.11, c3 10.200.0.12 (DNS client) on xn1/N;
#               c2 10.200.0.70 on xn2/N;  m1 10.200.16.10 on xn1/M;  m2 10.200.16.70 on xn2/M
#   VIP of "web" on N: 10.200.15.2 (top of the /20, outside every slice); 10.200.15.4 = VIP whose
#   only backend is the client itself (self-hairpin case).
set -euo pipefail

X=/tmp/xexp
RECIPE=${RECIPE:-/work/shared/tools/engine-in-netns.sh}
MASQ=${MASQ:-false}
IMG=xexp/busybox:1
MTU_LAN=1400
MTU_NET=$((MTU_LAN - 50))   # VXLAN over IPv4: 14 (inner Ethernet) + 8 (VXLAN) + 8 (UDP) + 20 (IP) = 50
VXPORT=4790
MAC_C2=02:53:0a:c8:00:46    # a MAC we choose (not Docker's derivation), for c2

d1() { docker -H "unix://$X/e1/docker.sock" "$@"; }
d2() { docker -H "unix://$X/e2/docker.sock" "$@"; }
# nsenter --net, not `ip netns exec` (which remounts /sys; /sys here then shows the host's devices:
# read link attributes with `ip -o link`, not /sys/class/net).
n1() { nsenter --net=/var/run/netns/xn1 "$@"; }
n2() { nsenter --net=/var/run/netns/xn2 "$@"; }
n3() { nsenter --net=/var/run/netns/xn3 "$@"; }
dn() { local n=$1; shift; "d$n" "$@"; }
nn() { local n=$1; shift; "n$n" "$@"; }
PY=$(command -v python3 >/dev/null && python3 -c 'import sys; print(sys.executable)' || echo python3)

# Docker 20.10 derives a container's MAC from its IPv4 address: 02:42:a:b:c:d. (Newer engines
# pick random MACs: the agent should pass --mac-address / EndpointSettings.MacAddress, or read
# the MAC back from `docker inspect`, never assume the derivation.)
mac_of() { local IFS=.; set -- $1; printf '02:42:%02x:%02x:%02x:%02x' "$1" "$2" "$3" "$4"; }
# The host-side veth of a container's eth0 (for hairpin mode).
veth_of() { # node container
  local idx; idx=$(dn "$1" exec "$2" cat /sys/class/net/eth0/iflink)
  nn "$1" ip -o link | awk -F': ' -v i="$idx" '$1==i {split($2,a,"@"); print a[1]}'
}
bridge_mac() { nn "$1" ip -o link show "$2" | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2; }

# --- per node: one stack network = Docker bridge network + VXLAN port -------------------------
net_up() { # node name subnet slice gw bridge vxlan vni local_ip
  local n=$1 name=$2 subnet=$3 slice=$4 gw=$5 br=$6 vx=$7 vni=$8 lip=$9
  # Docker 20.10 accepts --ip-range smaller than --subnet with our --gateway, and the MTU
  # option (it lands on the containers' eth0 and the veths; the bridge itself shows 1500
  # until its first port joins, then the smallest port MTU).
  dn "$n" network create -d bridge --subnet "$subnet" --ip-range "$slice" --gateway "$gw" \
    -o com.docker.network.bridge.name="$br" -o com.docker.network.driver.mtu=$MTU_NET \
    -o com.docker.network.bridge.enable_ip_masquerade="$MASQ" "$name" >/dev/null
  if [ "$MASQ" = false ]; then
    # Our own masquerade for traffic leaving the cluster pool (Docker's rule, when on, is
    # `-s SUBNET ! -o BRIDGE -j MASQUERADE`; it never touches bridged/VXLAN or VIP traffic
    # either, but it would rewrite traffic routed to another node's slice).
    nn "$n" iptables -t nat -A POSTROUTING -s "$subnet" ! -d 10.200.0.0/14 ! -o "$br" \
      -m comment --comment "stackd:$name" -j MASQUERADE
  fi
  # No flooding entry (no all-zero FDB): only the static entries below cross the LAN.
  # `proxy`: ARP requests for remote containers are answered locally from vx's neighbour table.
  nn "$n" ip link add "$vx" type vxlan id "$vni" dstport $VXPORT local "$lip" nolearning proxy dev eth0
  nn "$n" ip link set "$vx" mtu $MTU_NET
  nn "$n" ip link set "$vx" master "$br" up
}
# A remote endpoint (container, or another node's gateway) on this node's VXLAN device.
peer() { # node vxlan ip mac remote_node_ip
  nn "$1" bridge fdb append "$4" dev "$2" dst "$5"
  nn "$1" ip neigh replace "$3" lladdr "$4" dev "$2" nud permanent
}

cmd_up() {
  command -v busybox >/dev/null && busybox --list | grep -qx httpd || apt-get install -y -qq busybox-static >/dev/null
  command -v dnsmasq >/dev/null || apt-get install -y -qq dnsmasq-base >/dev/null
  mkdir -p "$X"

  # --- the LAN ----------------------------------------------------------------------------
  ip link add xbr0 type bridge
  ip addr add 10.239.0.254/24 dev xbr0
  ip link set xbr0 mtu $MTU_LAN up
  for i in 1 2 3; do
    ip netns add xn$i
    ip link add xv$i type veth peer name eth0 netns xn$i
    ip link set xv$i mtu $MTU_LAN master xbr0 up
    ip -n xn$i link set eth0 mtu $MTU_LAN up
    ip -n xn$i link set lo up
    ip -n xn$i addr add 10.239.0.$i/24 dev eth0
    ip -n xn$i route add default via 10.239.0.254
  done
  # The host's Docker set FORWARD to DROP and br_netfilter is on: frames bridged on xbr0 need this.
  iptables -I FORWARD -i xbr0 -o xbr0 -j ACCEPT

  # --- engines and the image ---------------------------------------------------------------
  for i in 1 2; do
    bash "$RECIPE" up xn$i "$X/e$i" 172.31.$i.1/24
    # New namespaces inherit ip_forward=1 here, so dockerd left FORWARD at ACCEPT; a real host
    # (where dockerd turned forwarding on itself) has DROP: model that.
    nn $i iptables -P FORWARD DROP
  done
  mkdir -p "$X/rootfs/bin" "$X/rootfs/tmp" "$X/rootfs/etc" "$X/rootfs/www/cgi-bin"
  cp "$(command -v busybox)" "$X/rootfs/bin/busybox"
  for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$X/rootfs/bin/$a"; done
  # CGI answering "<hostname> sees <client address>": how every check sees the source address.
  printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$(hostname) sees $REMOTE_ADDR"\n' \
    >"$X/rootfs/www/cgi-bin/who"
  chmod +x "$X/rootfs/www/cgi-bin/who"
  for i in 1 2; do tar -C "$X/rootfs" -c . | dn $i import -c 'CMD ["sh"]' - $IMG >/dev/null; done

  # --- networks N and M on both nodes --------------------------------------------------------
  net_up 1 N 10.200.0.0/20  10.200.0.0/26   10.200.0.1   stk-n vx-n 4242 10.239.0.1
  net_up 2 N 10.200.0.0/20  10.200.0.64/26  10.200.0.65  stk-n vx-n 4242 10.239.0.2
  net_up 1 M 10.200.16.0/20 10.200.16.0/26  10.200.16.1  stk-m vx-m 4243 10.239.0.1
  net_up 2 M 10.200.16.0/20 10.200.16.64/26 10.200.16.65 stk-m vx-m 4243 10.239.0.2

  # --- containers (fixed addresses, chosen by core) -------------------------------------------
  run() { local n=$1 name=$2; shift 2; dn "$n" run -d --name "$name" --hostname "$name" "$@" $IMG sleep 100000 >/dev/null; }
  run 1 c1  --network N --ip 10.200.0.10
  run 1 c1b --network N --ip 10.200.0.11
  run 1 c3  --network N --ip 10.200.0.12 --dns 10.200.0.1 --network-alias api
  # c2 gets a MAC of our choosing through the Engine API (Config.MacAddress, API 1.41: applies to
  # the container's first network). The docker 28 CLI refuses `--mac-address` with --network
  # against a 1.41 daemon ("specify mac-address per network requires API version 1.44").
  curl -sf --unix-socket "$X/e2/docker.sock" -H 'Content-Type: application/json' \
    -d '{"Image":"'$IMG'","Hostname":"c2","Cmd":["sleep","100000"],"MacAddress":"'$MAC_C2'",
         "HostConfig":{"NetworkMode":"N"},
         "NetworkingConfig":{"EndpointsConfig":{"N":{"IPAMConfig":{"IPv4Address":"10.200.0.70"}}}}}' \
    "http://x/v1.41/containers/create?name=c2" >/dev/null
  d2 start c2 >/dev/null
  run 1 m1  --network M --ip 10.200.16.10
  run 2 m2  --network M --ip 10.200.16.70
  for c in c1 c1b m1; do d1 exec $c httpd -p 8080 -h /www; done
  for c in c2 m2; do d2 exec $c httpd -p 8080 -h /www; done
  # UDP echo peers ("<name> sees <client>"), run from the host inside the containers' netns.
  cat >"$X/udpsrv.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(2048); s.sendto((sys.argv[2] + " sees " + a[0]).encode(), a)
EOF
  cat >"$X/udpcli.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
try:
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2]))); d, a = s.recvfrom(2048); print(d.decode(), "reply from", a[0])
except Exception as e: print("UDP FAIL", e)
EOF
  for nc in 1:c1b 2:c2; do
    n=${nc%%:*} c=${nc#*:}
    nsenter -t "$(dn "$n" inspect -f '{{.State.Pid}}' "$c")" -n "$PY" "$X/udpsrv.py" 9999 "$c" >/dev/null 2>&1 &
    echo $! >"$X/udp-$c.pid"
  done

  # --- static FDB + neighbour entries from "the state": remote endpoints only ----------------
  peer 1 vx-n 10.200.0.70  "$MAC_C2"                10.239.0.2
  peer 2 vx-n 10.200.0.10  "$(mac_of 10.200.0.10)"  10.239.0.1
  peer 2 vx-n 10.200.0.11  "$(mac_of 10.200.0.11)"  10.239.0.1
  peer 2 vx-n 10.200.0.12  "$(mac_of 10.200.0.12)"  10.239.0.1
  peer 1 vx-m 10.200.16.70 "$(mac_of 10.200.16.70)" 10.239.0.2
  peer 2 vx-m 10.200.16.10 "$(mac_of 10.200.16.10)" 10.239.0.1
  # Each node's gateway address is an endpoint too (its bridge MAC is random, read it): needed
  # when node 1 SNATs to its gateway (mesh variant a) and node 2's container answers it.
  peer 2 vx-n 10.200.0.1   "$(bridge_mac 1 stk-n)"  10.239.0.1
  peer 1 vx-n 10.200.0.65  "$(bridge_mac 2 stk-n)"  10.239.0.2

  # --- VIPs: a local /32 (answers the containers' ARP, arp_ignore=0) + DNAT, no SNAT ----------
  # No `dummy` link type in this kernel: the VIP goes on lo (on the bridge works as well).
  # The backend's reply goes straight to the client over L2 (VXLAN or the local bridge); the
  # client's node un-DNATs the bridged frame in br_netfilter (bridge-nf-call-iptables=1).
  for i in 1 2; do
    nn $i ip addr add 10.200.15.2/32 dev lo
    nn $i iptables -t nat -N STK-VIP
    nn $i iptables -t nat -I PREROUTING 1 -d 10.200.15.0/24 -j STK-VIP
  done
  # node 1: web = c2 (remote) or c1b (local), tcp 8080 and udp 9999, 50/50
  for p in tcp:8080 udp:9999; do
    n1 iptables -t nat -A STK-VIP -d 10.200.15.2 -p ${p%:*} --dport ${p#*:} -m statistic --mode random \
      --probability 0.5 -j DNAT --to-destination 10.200.0.70:${p#*:}
    n1 iptables -t nat -A STK-VIP -d 10.200.15.2 -p ${p%:*} --dport ${p#*:} -j DNAT --to-destination 10.200.0.11:${p#*:}
  done
  # node 2: web = c1b (on node 1)
  n2 iptables -t nat -A STK-VIP -d 10.200.15.2 -p tcp --dport 8080 -j DNAT --to-destination 10.200.0.11:8080
  n2 iptables -t nat -A STK-VIP -d 10.200.15.2 -p udp --dport 9999 -j DNAT --to-destination 10.200.0.11:9999
  # Self-hairpin (client = chosen backend): br_netfilter turns a DNAT back onto the same bridge
  # into a *bridged* DNAT, so the frame must leave by the port it came in: hairpin on that port
  # (re-set it whenever the container gets a new veth); and SNAT, or the backend would
  # answer itself locally.
  n1 ip addr add 10.200.15.4/32 dev lo
  n1 iptables -t nat -A STK-VIP -d 10.200.15.4 -p tcp --dport 8080 -j DNAT --to-destination 10.200.0.10:8080
  n1 bridge link set dev "$(veth_of 1 c1)" hairpin on
  n1 iptables -t nat -I POSTROUTING 1 -m conntrack --ctstate DNAT -s 10.200.0.10 -d 10.200.0.10 \
    -m comment --comment stackd:hairpin -j SNAT --to-source 10.200.0.1

  # --- DNS stand-in on node 1's gateway address on N ----------------------------------------
  n1 dnsmasq --bind-interfaces --listen-address=10.200.0.1 --except-interface=lo --no-resolv --no-hosts \
    --host-record=web,10.200.15.2 --log-queries --log-facility="$X/dnsmasq.log" --pid-file="$X/dnsmasq.pid" --user=root

  # --- routing mesh, variant a: entry node 1 has N: DNAT + SNAT to its gateway on N -----------
  n1 iptables -t nat -I PREROUTING 1 -d 10.239.0.1 -p tcp --dport 18080 -j DNAT --to-destination 10.200.0.70:8080
  n1 iptables -t nat -I POSTROUTING 1 -m conntrack --ctstate DNAT --ctorigdstport 18080 -d 10.200.0.70 \
    -p tcp --dport 8080 -j SNAT --to-source 10.200.0.1
  # LAN -> bridge is new, not "established", and Docker's DOCKER chain only accepts its own
  # published ports: accept in DOCKER-USER.
  n1 iptables -I DOCKER-USER 1 -i eth0 -o stk-n -m conntrack --ctstate DNAT --ctorigdstport 18080 \
    -m comment --comment stackd:mesh -j ACCEPT

  # --- routing mesh, variant b: entry node 3 has no network: route the slice via its node -----
  n3 sysctl -qw net.ipv4.ip_forward=1
  n3 iptables -P FORWARD DROP
  # xn3 runs no Docker, so the accept goes straight into FORWARD. On a node with Docker it goes
  # into DOCKER-USER, and must cover the reply too (eth0 -> eth0 is not matched by any Docker rule):
  #   iptables -I DOCKER-USER -i eth0 -o eth0 -m conntrack --ctstate DNAT,RELATED,ESTABLISHED -j ACCEPT
  # (not exercised here: untested on a Docker node).
  n3 iptables -A FORWARD -m conntrack --ctstate DNAT,RELATED,ESTABLISHED -j ACCEPT
  n3 ip route add 10.200.0.64/26 via 10.239.0.2
  n3 iptables -t nat -A PREROUTING -d 10.239.0.3 -p tcp --dport 18080 -j DNAT --to-destination 10.200.0.70:8080
  n3 iptables -t nat -A POSTROUTING -m conntrack --ctstate DNAT -d 10.200.0.70 -p tcp --dport 8080 \
    -j SNAT --to-source 10.239.0.3
  # On the backend node: LAN -> container is forwarded eth0 -> stk-n: accept it in DOCKER-USER.
  n2 iptables -I DOCKER-USER 1 -i eth0 -o stk-n -d 10.200.0.70 -p tcp --dport 8080 \
    -m comment --comment stackd:mesh-in -j ACCEPT
  echo "up (MASQ=$MASQ)"
}

PASSN=0 FAILN=0
check() { # name expected-regex command...   (command: a function or program, run in this shell)
  local name=$1 want=$2 out; shift 2
  out=$("$@" 2>&1 || true)
  if grep -Eq -- "$want" <<<"$out"; then PASSN=$((PASSN + 1)); echo "PASS $name"
  else FAILN=$((FAILN + 1)); echo "FAIL $name: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; fi
}
who() { dn "$1" exec "$2" sh -c "timeout 4 wget -qO- http://$3/cgi-bin/who || echo unreachable"; }
udp() { nsenter -t "$(dn "$1" inspect -f '{{.State.Pid}}' "$2")" -n "$PY" "$X/udpcli.py" "$3" "$4"; }
from_lan() { timeout 4 busybox wget -qO- "http://$1/cgi-bin/who" || echo unreachable; }
# 20 requests to node 1's VIP from c1: both backends answer, every one sees 10.200.0.10, none fails.
vip_balance() {
  local out; out=$(d1 exec c1 sh -c 'for i in $(seq 20); do timeout 3 wget -qO- http://10.200.15.2:8080/cgi-bin/who || echo FAIL; done')
  echo "$out" | sort | uniq -c
  grep -q '^c2 sees .*10\.200\.0\.10\]' <<<"$out" && grep -q '^c1b sees .*10\.200\.0\.10\]' <<<"$out" \
    && ! grep -vq 'sees .*10\.200\.0\.10\]' <<<"$out" && echo BALANCED-OK
}
udp_balance() {
  local out; out=$(for i in $(seq 10); do udp 1 c1 10.200.15.2 9999; done)
  echo "$out" | sort | uniq -c
  grep -q '^c2 sees 10.200.0.10 reply from 10.200.15.2' <<<"$out" && grep -q '^c1b sees 10.200.0.10 reply from 10.200.15.2' <<<"$out" \
    && ! grep -q FAIL <<<"$out" && echo BALANCED-OK
}
big_transfer() {
  d1 exec c1 sh -c 'dd if=/dev/urandom of=/tmp/big bs=1024 count=1024 2>/dev/null'
  # busybox nc -l closes when *its own* stdin ends (docker exec -d gives it /dev/null, and the
  # transfer is cut after a few KiB): keep its stdin open with `sleep N |`.
  d2 exec -d c2 sh -c 'sleep 10 | nc -l -p 7000 > /tmp/recv'; sleep 0.5
  d1 exec c1 sh -c 'nc -w 3 10.200.0.70 7000 < /tmp/big'; sleep 1
  local a b; a=$(d1 exec c1 md5sum /tmp/big | cut -d' ' -f1); b=$(d2 exec c2 md5sum /tmp/recv | cut -d' ' -f1)
  echo "sent $a received $b bytes $(d2 exec c2 wc -c /tmp/recv)"
  [ "$a" = "$b" ] && echo SAME
}
outside() {
  timeout 5 busybox nc -l -p 9090 -e sh -c 'netstat -tn | grep 9090' >"$X/hostnc.txt" 2>&1 & sleep 0.3
  d1 exec c1 sh -c 'timeout 3 nc -w 2 10.239.0.254 9090' || true; sleep 0.5; cat "$X/hostnc.txt"
}

cmd_test() {
  echo "-- 1/2 networks, MACs"
  check "docker kept slice + gateway (N on node 2)" '"IPRange":"10.200.0.64/26","Gateway":"10.200.0.65"' \
    d2 network inspect -f '{{json .IPAM.Config}}' N
  check "MAC derived from IP on 20.10 (c1, no --mac-address)" "02:42:0a:c8:00:0a" d1 exec c1 ip link show eth0
  check "MAC of our choosing via API Config.MacAddress (c2)" "$MAC_C2" d2 exec c2 ip link show eth0
  check "container MTU $MTU_NET" "mtu $MTU_NET" d1 exec c1 ip link show eth0
  echo "-- 3 flat L2 across nodes"
  check "ping c1 -> c2" " 0% packet loss" d1 exec c1 ping -c2 -W2 10.200.0.70
  check "ping c2 -> c1" " 0% packet loss" d2 exec c2 ping -c2 -W2 10.200.0.10
  check "full-size ping ($((MTU_NET - 28)) B payload = $MTU_NET B packet, outer 1400)" " 0% packet loss" \
    d1 exec c1 ping -c2 -W2 -s $((MTU_NET - 28)) 10.200.0.70
  check "source kept: c2 sees c1's own address" "c2 sees .*10\.200\.0\.10\]" who 1 c1 10.200.0.70:8080
  check "1 MiB over TCP c1 -> c2, md5 equal" "SAME" big_transfer
  check "outside (host 10.239.0.254) reachable, seen from node 1's LAN address" "10\.239\.0\.1:" outside
  echo "-- 4 VIP 10.200.15.2 (DNAT on the client's node, no SNAT)"
  check "node1 VIP tcp x20: remote c2 + local c1b, all ok, all see 10.200.0.10" "BALANCED-OK" vip_balance
  check "node1 VIP udp x10: both backends, see 10.200.0.10, reply from the VIP" "BALANCED-OK" udp_balance
  check "node2 VIP tcp -> backend on node 1, client address kept" "c1b sees .*10\.200\.0\.70\]" who 2 c2 10.200.15.2:8080
  check "node2 VIP udp -> backend on node 1" "c1b sees 10\.200\.0\.70 reply from 10\.200\.15\.2" udp 2 c2 10.200.15.2 9999
  check "self-hairpin VIP (hairpin on + SNAT): client = backend" "c1 sees .*10\.200\.0\.1\]" who 1 c1 10.200.15.4:8080
  n2 sysctl -qw net.bridge.bridge-nf-call-iptables=0
  check "...with bridge-nf-call-iptables=0 on the client's node the VIP breaks" "unreachable" who 2 c2 10.200.15.2:8080
  n2 sysctl -qw net.bridge.bridge-nf-call-iptables=1
  echo "-- 5 DNS via Docker's 127.0.0.11 -> node gateway 10.200.0.1"
  check "resolv.conf is the embedded resolver" "nameserver 127.0.0.11" d1 exec c3 cat /etc/resolv.conf
  check "nslookup web -> 10.200.15.2 (forwarded)" "Address: 10\.200\.15\.2" d1 exec c3 nslookup web
  check "forwarded query arrives from the container's own address" "query\[A\] web from 10\.200\.0\.12" cat "$X/dnsmasq.log"
  check "docker still answers container names itself (c1)" "Address: 10\.200\.0\.10" d1 exec c3 nslookup c1
  check "docker answers its network aliases itself (api -> c3)" "Address: 10\.200\.0\.12" d1 exec c3 nslookup api
  d1 run -d --name shadow --network N --ip 10.200.0.13 --network-alias web $IMG sleep 100000 >/dev/null
  check "a docker alias 'web' on N SHADOWS our answer" "Address: 10\.200\.0\.13" d1 exec c3 nslookup web
  d1 rm -f shadow >/dev/null
  check "...gone again after removing it" "Address: 10\.200\.15\.2" d1 exec c3 nslookup web
  echo "-- 6 isolation N / M (Docker's DOCKER-ISOLATION chains)"
  check "M across nodes works (m1 -> m2)" "m2 sees .*10\.200\.16\.10\]" who 1 m1 10.200.16.70:8080
  check "N -> M same node blocked (c1 -> m1)" "unreachable" who 1 c1 10.200.16.10:8080
  check "N -> M across nodes blocked (c1 -> m2)" "unreachable" who 1 c1 10.200.16.70:8080
  check "M -> N across nodes blocked (m2 -> c1)" "unreachable" who 2 m2 10.200.0.10:8080
  check "M -> N's VIP blocked (m1 -> 10.200.15.2)" "unreachable" who 1 m1 10.200.15.2:8080
  echo "-- 7 routing mesh from the LAN (host 10.239.0.254)"
  check "a: entry node 1 (has N), SNAT to 10.200.0.1" "sees .*10\.200\.0\.1\]" from_lan 10.239.0.1:18080
  check "b: entry node 3 (no N), routed to node 2, SNAT to 10.239.0.3" "sees .*10\.239\.0\.3\]" from_lan 10.239.0.3:18080
  for n in 2 3; do nn $n sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.eth0.rp_filter=1; done
  check "b: still works with strict rp_filter on nodes 2 and 3" "sees .*10\.239\.0\.3\]" from_lan 10.239.0.3:18080
  for n in 2 3; do nn $n sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0; done
  echo "$PASSN passed, $FAILN failed"
  [ "$FAILN" -eq 0 ]
}

cmd_down() {
  for f in "$X"/udp-*.pid "$X"/dnsmasq.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for i in 1 2; do [ -S "$X/e$i/docker.sock" ] && bash "$RECIPE" down xn$i "$X/e$i" || true; done
  for i in 1 2 3; do ip netns del xn$i 2>/dev/null || true; done
  ip link del xbr0 2>/dev/null || true
  while iptables -D FORWARD -i xbr0 -o xbr0 -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$X"
  echo down
}

case "${1:-}" in
  up) cmd_up ;;
  test) cmd_test ;;
  down) cmd_down ;;
  *) echo "usage: $0 up|test|down   (MASQ=true to keep Docker's masquerade)" >&2; exit 2 ;;
esac
