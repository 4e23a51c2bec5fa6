# Writes the hand-made seeds of corpus/token_swap, corpus/routable_id and corpus/forwarded
# (run from fuzz/: python3 seeds/make_seeds.py). The captured messages and config files are
# copied as they are (README.md here).
import hashlib, hmac, os

def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n == 0:
            return out + bytes([b])
        out += bytes([b | 0x80])

def field(i, payload):
    return i.to_bytes(2, "little") + payload

def string(i, s):
    return field(i, varint(len(s)) + s)

END = b"\xff\xff"

def header(t, cid=None, qid=1):
    h = field(1, varint(t))
    if cid is not None:
        h += string(2, cid)
    return h + field(3, varint(qid)) + END

def write(d, name, data):
    with open(os.path.join("corpus", d, "seed_" + name), "wb") as f:
        f.write(data)

body = string(2, b"v1.5.5") + string(3, b"linux_amd64") + field(4, varint(1)) + field(5, varint(1)) + END
write("token_swap", "with_client_id", header(1, b"chosen-by-client") + string(1, b"secret1") + body)
write("token_swap", "no_token", header(1) + body)
write("token_swap", "long_token_long_id", header(1, b"i" * 200) + string(1, b"t" * 300) + body)
write("token_swap", "only_end", header(1) + END)

# Ids minted as quackgate mints them, under the fuzz target's secrets ([7; 32], [9; 32]).
def mint(secret, node, worker, access, exp, principal, inner):
    tag = hashlib.sha256(principal.encode()).digest()[:4].hex()
    prefix = f"q2.{node}.{worker}.{access}.{exp:x}.{tag}.".encode()
    mac = hmac.new(secret, prefix + inner, hashlib.sha256).digest()[:16].hex().encode()
    return prefix + mac + b"." + inner

cid = b"A424FCD8ACB5D3BB949C46D82A8E0530"
write("routable_id", "current_rw", mint(bytes([7] * 32), "n0", 0, "rw", 0, "alice", cid))
write("routable_id", "current_ro_exp", mint(bytes([7] * 32), "node-24-characters-long0", 65535, "ro", 1900000000, "bob", cid))
write("routable_id", "previous", mint(bytes([9] * 32), "n1", 3, "rw", 0xFFFFFFFFFFFFFFFF, "carol", b"x.y.z"))
write("routable_id", "other_secret", mint(bytes([1] * 32), "n0", 0, "rw", 0, "alice", cid))
write("routable_id", "worker_id", cid)
write("routable_id", "tagged_by_proxy", b"backend-07.F6054DEA191DF2F4FDB56786211F7243")

# First byte picks the TCP peer (index into the target's list; 0 trusted v4, 3 ::1, 4
# untrusted), then X-Forwarded-For lines separated by \n.
write("forwarded", "one_hop", b"\x00203.0.113.9")
write("forwarded", "chain", b"\x00198.51.100.1, 203.0.113.9, 10.0.0.2")
write("forwarded", "two_lines_ports", b"\x01[2001:db8::7]:443\n192.0.2.1:5678, fd00::9")
write("forwarded", "junk_left", b"\x03junk,,, 1.2.3.4 ,10.1.1.1")
write("forwarded", "mapped", b"\x02::ffff:192.0.2.44")
write("forwarded", "untrusted_peer", b"\x04198.51.100.1")
write("forwarded", "all_trusted", b"\x0010.0.0.1, 10.0.0.2, 192.168.1.1")
