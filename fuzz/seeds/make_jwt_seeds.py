# Generates seeds/jwt-jwks.json and the seed tokens of corpus/jwt (run once, from fuzz/:
# python3 seeds/make_jwt_seeds.py seeds/jwt-jwks.json corpus/jwt). Needs the Python package
# `cryptography`. The private keys are thrown away: the fuzzer only needs the public JWKS and
# tokens signed once.
import base64, json, os, sys
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519, padding, utils
from cryptography.hazmat.primitives import hashes, hmac

out_jwks, corpus = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def n2b(n, l=None):
    l = l or (n.bit_length() + 7) // 8
    return n.to_bytes(l, "big")

rsa_k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_k = ec.generate_private_key(ec.SECP256R1())
ed_k = ed25519.Ed25519PrivateKey.generate()
hs1, hs2 = os.urandom(32), os.urandom(48)
rn = rsa_k.public_key().public_numbers()
en = ec_k.public_key().public_numbers()
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
edpub = ed_k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
jwks = {"keys": [
    {"kty": "oct", "kid": "hs1", "k": b64(hs1)},
    {"kty": "oct", "kid": "hs2", "alg": "HS256", "k": b64(hs2)},
    {"kty": "RSA", "kid": "rs1", "use": "sig", "n": b64(n2b(rn.n)), "e": b64(n2b(rn.e))},
    {"kty": "EC", "kid": "es1", "crv": "P-256", "x": b64(n2b(en.x, 32)), "y": b64(n2b(en.y, 32))},
    {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64(edpub)},
]}
json.dump(jwks, open(out_jwks, "w"), indent=1)

def sign(alg, kid, claims, typ="JWT", extra=None):
    h = {"alg": alg, "typ": typ}
    if typ is None: del h["typ"]
    if kid is not None: h["kid"] = kid
    if extra: h.update(extra)
    si = (b64(json.dumps(h, separators=(",", ":")).encode()) + "." + b64(json.dumps(claims, separators=(",", ":")).encode())).encode()
    if alg == "HS256":
        m = hmac.HMAC(hs1 if kid == "hs1" else hs2, hashes.SHA256()); m.update(si); sig = m.finalize()
    elif alg == "RS256":
        sig = rsa_k.sign(si, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = utils.decode_dss_signature(ec_k.sign(si, ec.ECDSA(hashes.SHA256()))); sig = n2b(r, 32) + n2b(s, 32)
    elif alg == "EdDSA":
        sig = ed_k.sign(si)
    else:
        sig = b""
    return si.decode() + "." + b64(sig)

good = {"sub": "alice", "iss": "iss-1", "aud": "aud-1", "exp": 4102444800, "iat": 1700000000, "role": "read_write"}
seeds = {
    "hs1_valid": sign("HS256", "hs1", good),
    "hs2_valid_ro": sign("HS256", "hs2", dict(good, role="read_only", aud=["x", "aud-1"])),
    "rs1_valid": sign("RS256", "rs1", good),
    "es1_valid": sign("ES256", "es1", good, typ="at+jwt"),
    "ed1_valid": sign("EdDSA", "ed1", dict(good, nbf=1700000000)),
    "expired": sign("HS256", "hs1", dict(good, exp=1700000100)),
    "wrong_alg_for_key": sign("HS256", "rs1", good),
    "no_kid": sign("ES256", None, good, typ=None),
    "unknown_kid": sign("HS256", "nope", good),
    "alg_none": sign("none", "hs1", good),
    "typ_jwe": sign("HS256", "hs1", good, typ="JWE"),
    "nbf_string": sign("HS256", "hs1", dict(good, nbf="soon")),
    "exp_float": sign("RS256", "rs1", dict(good, exp=4102444800.5)),
    "no_role": sign("HS256", "hs2", {k: v for k, v in good.items() if k != "role"}),
    "bad_role": sign("EdDSA", "ed1", dict(good, role="admin")),
    "wrong_iss": sign("ES256", "es1", dict(good, iss="other")),
    "jku_header": sign("HS256", "hs1", good, extra={"jku": "https://evil/jwks", "crit": ["exp"]}),
}
os.makedirs(corpus, exist_ok=True)
for name, tok in seeds.items():
    open(os.path.join(corpus, "seed_" + name), "w").write(tok)
