"""Hypothesis state machines driving the Engine and a plain model in lockstep (issue 8).

* :class:`ConntrackMachine` — connection tracking with the port allocator: open, reply,
  establish, exchange UDP datagrams, close (FIN), reset, let time pass (expiry), reopen a
  TIME_WAIT/CLOSE tuple with a new SYN. The model is a dict of connections with the state and
  timeout each packet implies (netfilter's TCP sequence, AWS's UDP timeouts), written out by hand;
  after every packet the engine's live connections must equal the model's, with the same states,
  and the allocator's promises must hold (ports in range, no shared VPC-side tuple, capacity).
* :class:`ConfigChangeMachine` — configuration changes during traffic through
  ``Engine.update_config``: tracked connections survive security-group changes, network-ACL
  changes apply to the very next packet [AWS-FACTS 2, 3].
"""
from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hyperplane import limits
from hyperplane.codes import DropReason as R
from hyperplane.testing import engine_for, load_documents
from hyperplane.testing.traffic import EPOCH
from hyperplane.testing.wire import ACK, FIN, PSH, RST, SYN, TCP, UDP, ip_packet

T = {k.value: v for k, v in limits.TIMEOUTS.items()}
SANDBOX = "169.254.76.10"
SERVERS = ("10.0.2.10", "10.0.2.11")


def documents(server_sg_open: bool = True, deny_requests: bool = False, deny_replies: bool = False) -> dict:
    """The machines' VPC: function ``fn`` in a /28 (few addresses: overflow ENIs run out), two
    servers in another subnet whose ACL can deny requests (inbound 5432) or replies (outbound
    ephemeral ports), and whose security group can stop admitting the function's group."""
    allow_all = [{"CidrBlock": "0.0.0.0/0", "Egress": e, "Protocol": "-1", "RuleAction": "allow", "RuleNumber": 100}
                 for e in (True, False)]
    server_entries = list(allow_all)
    if deny_requests:
        server_entries.append({"CidrBlock": "10.0.1.0/28", "Egress": False, "Protocol": "6", "RuleAction": "deny",
                               "RuleNumber": 50, "PortRange": {"From": 5432, "To": 5432}})
    if deny_replies:
        server_entries.append({"CidrBlock": "10.0.1.0/28", "Egress": True, "Protocol": "6", "RuleAction": "deny",
                               "RuleNumber": 50, "PortRange": {"From": 1024, "To": 65535}})
    ingress = [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": "sg-fn"}]},
               {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "UserIdGroupPairs": [{"GroupId": "sg-fn"}]}]
    return {
        "Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16", "OwnerId": "123456789012"}],
        "Subnets": [{"SubnetId": "subnet-fn", "VpcId": "vpc-1", "CidrBlock": "10.0.1.0/28"},
                    {"SubnetId": "subnet-db", "VpcId": "vpc-1", "CidrBlock": "10.0.2.0/24"}],
        "SecurityGroups": [
            {"GroupId": "sg-fn", "VpcId": "vpc-1", "IpPermissions": [],
             "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]},
            {"GroupId": "sg-db", "VpcId": "vpc-1", "IpPermissions": ingress if server_sg_open else [],
             "IpPermissionsEgress": []},
        ],
        "NetworkAcls": [
            {"NetworkAclId": "acl-default", "VpcId": "vpc-1", "IsDefault": True, "Entries": allow_all,
             "Associations": [{"SubnetId": "subnet-fn"}]},
            {"NetworkAclId": "acl-db", "VpcId": "vpc-1", "IsDefault": False, "Entries": server_entries,
             "Associations": [{"SubnetId": "subnet-db"}]},
        ],
        "NetworkInterfaces": [
            {"NetworkInterfaceId": f"eni-db{i}", "VpcId": "vpc-1", "SubnetId": "subnet-db", "PrivateIpAddress": ip,
             "Groups": [{"GroupId": "sg-db"}]} for i, ip in enumerate(SERVERS)],
        "Functions": [{"FunctionName": "fn", "VpcConfig": {"SubnetIds": ["subnet-fn"], "SecurityGroupIds": ["sg-fn"]}}],
    }


class ModelConn:
    """The model's view of one connection: state name, timer, the VPC-side tuple it got."""

    def __init__(self, proto: int, state: str, expires: float, eni_id: str, eni_tuple: tuple):
        self.proto = proto
        self.state = state
        self.expires = expires
        self.eni_id = eni_id
        self.eni_tuple = eni_tuple
        self.exchanges = 0
        self.last_reply = False
        self.seq = 1000
        self.rseq = 9000


TCP_TIMEOUT = {"SYN_SENT": "tcp_syn_sent", "SYN_RECV": "tcp_syn_recv", "ESTABLISHED": "tcp_established",
               "FIN_WAIT": "tcp_fin_wait", "LAST_ACK": "tcp_last_ack", "TIME_WAIT": "tcp_time_wait",
               "CLOSE": "tcp_close"}
PORTS = (1024, 1025)  # two source ports per destination: the allocator runs out quickly
CAPACITY = 3
NPORTS = PORTS[1] - PORTS[0] + 1


class ConntrackMachine(RuleBasedStateMachine):
    """Conntrack + port allocator, engine and model in lockstep."""

    @initialize()
    def setup(self):
        self.model_vpc = load_documents(documents())
        self.engine = engine_for(self.model_vpc, {"169.254.76.0/24": "fn"}, port_range=PORTS, eni_capacity=CAPACITY)
        self.now = self.last_invoke = EPOCH
        self.conns: dict[tuple, ModelConn] = {}  # (proto, sport, server, dport) -> ModelConn

    # --- packets ------------------------------------------------------------------------------
    def send(self, data: bytes):
        """Process one packet now; the model first expires what the engine expires."""
        for key in [k for k, c in self.conns.items() if c.expires <= self.now]:
            del self.conns[key]
        return self.engine.process(data, self.now)

    def out(self, key, flags=0, payload=b""):
        proto, sport, server, dport = key
        conn = self.conns.get(key)
        seq, ack = (conn.seq, conn.rseq) if conn else (1000, 0)
        return self.send(ip_packet(SANDBOX, server, proto, sport, dport, flags, seq, ack if flags & ACK else 0, payload))

    def back(self, key, flags=0, payload=b""):
        proto, sport, server, dport = key
        conn = self.conns.get(key)
        seq, ack = (conn.rseq, conn.seq) if conn else (9000, 0)
        return self.send(ip_packet(server, SANDBOX, proto, dport, sport, flags, seq, ack if flags & ACK else 0, payload))

    def engine_conn(self, key):
        proto, sport, server, dport = key
        for conn in self.engine.connections():
            if conn.proto == proto and conn.lambda_tuple[1] == sport and conn.lambda_tuple[3] == dport and \
                    conn.eni_tuple[2] == int(ipaddress.ip_address(server)):
                return conn
        return None

    def set_state(self, key, state: str):
        conn = self.conns[key]
        conn.state = state
        name = TCP_TIMEOUT[state] if conn.proto == TCP else ("udp_stream" if state == "STREAM" else "udp")
        conn.expires = self.now + T[name]

    def live(self, states):
        return sorted(k for k, c in self.conns.items() if c.state in states and c.expires > self.now)

    # --- rules --------------------------------------------------------------------------------
    @rule(proto=st.sampled_from([TCP, UDP]), sport=st.integers(40000, 40005), server=st.sampled_from(SERVERS))
    def open(self, proto, sport, server):
        key = (proto, sport, server, 5432 if proto == TCP else 53)
        current = self.conns.get(key)
        if current is not None and current.expires > self.now:
            return  # a live tuple: "reopen" covers the TIME_WAIT/CLOSE case
        self.conns.pop(key, None)
        self.last_invoke = self.now
        result = self.out(key, SYN if proto == TCP else 0, b"" if proto == TCP else b"query")
        if result.dropped:
            # the only refusal possible here: no ENI of (subnet, SG set) has a slot and a port
            assert result.reason == R.PORT_EXHAUSTION, result
            enis = self.engine.control.enis_of("fn")
            assert all(e.connections >= CAPACITY or self._ports_toward(e.id, key) >= NPORTS
                       for e in enis if e.live), "refused while an ENI had a slot and a port"
            return
        conn = self.engine_conn(key)
        assert conn is not None, "forwarded, but no connection was tracked"
        state = "SYN_SENT" if proto == TCP else "UNREPLIED"
        self.conns[key] = ModelConn(proto, state, 0.0, conn.eni_id, conn.eni_tuple)
        self.set_state(key, state)
        if proto == TCP:
            self.conns[key].seq += 1

    def _ports_toward(self, eni_id, key):
        proto, _, server, dport = key
        return sum(1 for c in self.conns.values() if c.eni_id == eni_id and c.proto == proto
                   and c.expires > self.now and c.eni_tuple[3] == dport
                   and c.eni_tuple[2] == int(ipaddress.ip_address(server)))

    @rule(data=st.data())
    def establish(self, data):
        keys = self.live({"SYN_SENT"})
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        assert self.back(key, SYN | ACK).forwarded
        self.conns[key].rseq += 1
        self.set_state(key, "SYN_RECV")
        assert self.out(key, ACK).forwarded
        self.set_state(key, "ESTABLISHED")

    @rule(data=st.data(), payload=st.binary(min_size=1, max_size=32))
    def talk(self, data, payload):
        keys = self.live({"ESTABLISHED", "UNREPLIED", "REPLIED", "STREAM"})
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        conn = self.conns[key]
        if conn.proto == TCP:
            assert self.out(key, PSH | ACK, payload).forwarded
            conn.seq += len(payload)
            assert self.back(key, ACK).forwarded
            self.set_state(key, "ESTABLISHED")
            return
        if data.draw(st.booleans(), label="reply"):
            assert self.back(key, 0, payload).forwarded
            if not conn.last_reply:
                conn.exchanges += 1
            conn.last_reply = True
        else:
            assert self.out(key, 0, payload).forwarded
            conn.last_reply = False
        self.set_state(key, {0: "UNREPLIED", 1: "REPLIED"}.get(conn.exchanges, "STREAM"))

    @rule(data=st.data())
    def close(self, data):
        keys = [k for k in self.live({"ESTABLISHED"}) if k[0] == TCP]
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        conn = self.conns[key]
        assert self.out(key, FIN | ACK).forwarded
        conn.seq += 1
        self.set_state(key, "FIN_WAIT")
        self.check_states()
        assert self.back(key, FIN | ACK).forwarded
        conn.rseq += 1
        self.set_state(key, "LAST_ACK")
        self.check_states()
        assert self.out(key, ACK).forwarded
        self.set_state(key, "TIME_WAIT")

    @rule(data=st.data(), from_sandbox=st.booleans())
    def reset(self, data, from_sandbox):
        keys = [k for k in self.live({"SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK"}) if k[0] == TCP]
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        result = self.out(key, RST | ACK) if from_sandbox else self.back(key, RST | ACK)
        assert result.forwarded
        self.set_state(key, "CLOSE")

    @rule(data=st.data())
    def reopen(self, data):
        """A SYN on a TIME_WAIT/CLOSE tuple reopens it: same connection, same VPC-side port."""
        keys = self.live({"TIME_WAIT", "CLOSE"})
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        before = self.conns[key].eni_tuple
        self.conns[key].seq += 7
        assert self.out(key, SYN).forwarded
        self.conns[key].seq += 1
        self.set_state(key, "SYN_SENT")
        assert self.engine_conn(key).eni_tuple == before

    @rule(dt=st.sampled_from([0.5, 5.0, 11.0, 31.0, 61.0, 121.0, 181.0, 432001.0]))
    def wait(self, dt):
        # (idling for weeks makes the function Inactive: the control-plane machine covers that)
        if self.now + dt - self.last_invoke < limits.IDLE_RECLAIM_PERIOD:
            self.now += dt

    # --- lockstep checks ----------------------------------------------------------------------
    def check_states(self):
        live = self.engine.connections()
        engine_view = {}
        for conn in live:
            key = (conn.proto, conn.lambda_tuple[1], str(ipaddress.ip_address(conn.eni_tuple[2])),
                   conn.lambda_tuple[3])
            engine_view[key] = conn.state_name()
        assert engine_view == {k: c.state for k, c in self.conns.items()}

    @invariant()
    def engine_and_model_agree(self):
        if hasattr(self, "engine"):
            # compare as of the last packet: the engine expires connections when a packet comes
            self.check_states()

    @invariant()
    def allocator_promises(self):
        if not hasattr(self, "engine"):
            return
        tuples = Counter((c.eni_id, c.proto, c.eni_tuple) for c in self.engine.connections())
        assert all(n == 1 for n in tuples.values()), tuples
        assert all(PORTS[0] <= c.eni_tuple[1] <= PORTS[1] for c in self.engine.connections())
        per_eni = Counter(c.eni_id for c in self.engine.connections())
        for eni in self.engine.control.enis() if self.engine.control is not None else ():
            assert eni.connections == per_eni.get(eni.id, 0) <= CAPACITY, (eni, per_eni)


class ConfigChangeMachine(RuleBasedStateMachine):
    """Configuration changes during traffic, applied with ``Engine.update_config``."""

    @initialize()
    def setup(self):
        self.flags = {"server_sg_open": True, "deny_requests": False, "deny_replies": False}
        self.engine = engine_for(load_documents(documents()), {"169.254.76.0/24": "fn"})
        self.now = EPOCH
        self.next_port = 41000
        self.open_conns: list[int] = []  # sandbox ports of connections whose SYN was accepted

    def apply(self):
        self.engine.update_config(load_documents(documents(**self.flags)))

    def send(self, data):
        self.now += 1.0
        return self.engine.process(data, self.now)

    @rule()
    def connect(self):
        """A new connection needs the server's SG now, and the server subnet's ACL both ways."""
        sport = self.next_port
        self.next_port += 1
        syn = self.send(ip_packet(SANDBOX, SERVERS[0], TCP, sport, 5432, SYN, 1))
        if self.flags["deny_requests"]:
            assert syn.dropped and syn.reason == R.NACL_INGRESS and syn.component == "acl-db", syn
            return
        if not self.flags["server_sg_open"]:
            assert syn.dropped and syn.reason == R.SG_INGRESS and syn.component == "sg-db", syn
            return
        assert syn.forwarded, syn
        self.open_conns.append(sport)
        synack = self.send(ip_packet(SERVERS[0], SANDBOX, TCP, 5432, sport, SYN | ACK, 500, 2))
        assert synack.forwarded != self.flags["deny_replies"], synack
        if synack.dropped:
            assert synack.reason == R.NACL_EGRESS and synack.component == "acl-db", synack
        else:
            assert self.send(ip_packet(SANDBOX, SERVERS[0], TCP, sport, 5432, ACK, 2, 501)).forwarded

    @precondition(lambda self: self.open_conns)
    @rule(data=st.data())
    def talk(self, data):
        """Tracked connections ignore the security groups' current rules; the ACL decides now."""
        sport = data.draw(st.sampled_from(self.open_conns))
        request = self.send(ip_packet(SANDBOX, SERVERS[0], TCP, sport, 5432, PSH | ACK, 2, 501, b"select 1"))
        assert request.forwarded != self.flags["deny_requests"], (self.flags, request)
        if request.dropped:
            assert request.reason == R.NACL_INGRESS, request
        answer = self.send(ip_packet(SERVERS[0], SANDBOX, TCP, 5432, sport, PSH | ACK, 501, 10, b"1"))
        assert answer.forwarded != self.flags["deny_replies"], (self.flags, answer)
        if answer.dropped:
            assert answer.reason == R.NACL_EGRESS, answer

    @rule(name=st.sampled_from(["server_sg_open", "deny_requests", "deny_replies"]))
    def change(self, name):
        self.flags[name] = not self.flags[name]
        self.apply()


ConntrackMachine.TestCase.settings = settings(ConntrackMachine.TestCase.settings, stateful_step_count=40)
ConfigChangeMachine.TestCase.settings = settings(ConfigChangeMachine.TestCase.settings, stateful_step_count=25)
TestConntrack = ConntrackMachine.TestCase
TestConfigChanges = ConfigChangeMachine.TestCase
