#!/usr/bin/env python3
"""The image's runtime layout without a Docker engine: the Dockerfile's last stage, laid out in a
folder, and a process run in it as the image's user on a read-only root.

  image_rootfs.py build --out DIR --bin QUACKGATE --duckdb-home H
  image_rootfs.py run --rootfs DIR [--volume HOST:PATH[:ro] ...] [--env K=V ...] [-- ARGS...]

`build` reads the runtime stage of the repository's Dockerfile (after its last FROM) and does
what each instruction does, so the layout cannot drift from the Dockerfile:
  - `RUN groupadd ... useradd ... install -d ...`: the group, the user and the folders, as
    /etc/group, /etc/passwd and directories with that owner and mode;
  - `COPY --from=build SRC DST`: SRC is what the build stage makes, taken from this machine:
    the release binary (--bin), the extensions fetch-duckdb laid out (--duckdb-home), and the
    public CA roots; any other SRC is an error, so a new build-stage artifact must be named here;
  - `COPY SRC DST`: from the repository;
  - `ENV`, `WORKDIR`, `USER`, `ENTRYPOINT`, `CMD`: kept in DIR/image.json for `run`;
  - anything else is an error.
The base image, debian:bookworm-slim, is this machine's own /usr (Debian 12 too; /usr/local
excepted, which is the image's), mounted read-only by `run`: no registry is reachable to pull
the real one.

`run` (root only: it needs a mount namespace) makes a private mount namespace in which the
folder is the root, read-only, with /usr read-only from the host, /proc, /dev, and each
--volume mounted where the platform would mount it (ACA: the secret volume, an EmptyDir on
/tmp, the Azure Files share). It then drops to the image's USER (setpriv: no capabilities, no
supplementary groups) in its WORKDIR, with its ENV, and runs its ENTRYPOINT with ARGS (CMD when
none). Nothing runs as root inside, and every path the process writes must be a volume.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def runtime_stage(text):
    """The instructions of the Dockerfile's last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    last = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last + 1:]


def base_usr():
    """The base image's /usr folders, this machine's; /usr/local is the image's own."""
    return sorted(d.name for d in Path("/usr").iterdir() if d.is_dir() and not d.is_symlink() and d.name != "local")


def build_artifacts(args):
    return {
        "/usr/local/bin/quackgate": Path(args.bin),
        "/opt/duckdb/ext": Path(args.duckdb_home) / "ext",
        "/etc/ssl/certs/ca-certificates.crt": HOST_CA_BUNDLE,
    }


def copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def run_users(out, cmd, image):
    """The one RUN the runtime stage has: groupadd, useradd, install -d."""
    for part in (p.strip() for p in cmd.split("&&")):
        words = shlex.split(part)
        opt = lambda name: words[words.index(name) + 1]
        if words[0] == "groupadd":
            gid = int(opt("--gid"))
            image["groups"].append(f"{words[-1]}:x:{gid}:")
        elif words[0] == "useradd":
            uid, gid, home = int(opt("--uid")), int(opt("--gid")), opt("--home-dir")
            image["users"].append(f"{words[-1]}:x:{uid}:{gid}::{home}:/usr/sbin/nologin")
        elif words[0] == "install" and "-d" in words:
            path = out / words[-1].lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, int(opt("-o")), int(opt("-g")))
            os.chmod(path, int(opt("-m"), 8))
        else:
            raise SystemExit(f"image_rootfs: the Dockerfile's RUN does {words[0]!r}, which this layout does not know")


def build(args):
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for d in ("usr", "etc", "proc", "dev", "tmp", "run", "var"):
        (out / d).mkdir(exist_ok=True)
    for d in base_usr():
        (out / "usr" / d).mkdir()
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, out / link)
    image = {"env": {}, "workdir": "/", "user": "0:0", "entrypoint": [], "cmd": [],
             "groups": ["root:x:0:"], "users": ["root:x:0:0:root:/root:/usr/sbin/nologin"]}
    artifacts = build_artifacts(args)
    for ins in runtime_stage(DOCKERFILE.read_text()):
        word, _, rest = ins.partition(" ")
        word = word.upper()
        if word == "RUN":
            run_users(out, rest, image)
        elif word == "COPY":
            parts = shlex.split(rest)
            stage = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
            src, dst = [p for p in parts if not p.startswith("--")]
            if stage:
                if src not in artifacts:
                    raise SystemExit(f"image_rootfs: COPY --from={stage} {src}: not an artifact this layout knows")
                copy(artifacts[src], out / dst.lstrip("/"))
            else:
                copy(REPO / src, out / dst.lstrip("/"))
        elif word == "ENV":
            for kv in shlex.split(rest):
                k, v = kv.split("=", 1)
                image["env"][k] = v
        elif word == "WORKDIR":
            image["workdir"] = rest
            (out / rest.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif word == "USER":
            image["user"] = rest
        elif word in ("ENTRYPOINT", "CMD"):
            image[word.lower()] = json.loads(rest)
        elif word in ("EXPOSE", "HEALTHCHECK"):
            pass
        else:
            raise SystemExit(f"image_rootfs: the Dockerfile's {word} is not handled here")
    (out / "etc" / "group").write_text("".join(g + "\n" for g in image["groups"]))
    (out / "etc" / "passwd").write_text("".join(u + "\n" for u in image["users"]))
    # What every container runtime, ACA's included, writes into a container's /etc.
    for f in ("hosts", "resolv.conf", "nsswitch.conf"):
        if Path("/etc", f).exists():
            shutil.copy(Path("/etc", f), out / "etc" / f)
    (out / "image.json").write_text(json.dumps(image, indent=1))
    print(f"image_rootfs: {out} (user {image['user']}, entrypoint {image['entrypoint']})")


def run_argv(rootfs, volumes, env, args):
    """The command that runs ARGS in the image: for a Popen, or exec'd by `run`."""
    return [sys.executable, str(Path(__file__).resolve()), "run", "--rootfs", str(rootfs),
            *(a for v in volumes for a in ("--volume", v)),
            *(a for k, v in env.items() for a in ("--env", f"{k}={v}")),
            "--", *args]


def run(args):
    rootfs = Path(args.rootfs).resolve()
    image = json.loads((rootfs / "image.json").read_text())
    q = shlex.quote
    r = q(str(rootfs))
    mounts = [
        f"mount --bind {r} {r}",
        *(f"mount --rbind /usr/{d} {r}/usr/{d} && mount -o remount,bind,ro {r}/usr/{d}" for d in base_usr()),
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
        f"mount -t tmpfs -o mode=0755 tmpfs {r}/run",
    ]
    points, binds = [], []
    for v in args.volume:
        host, path, *mode = v.split(":")
        target = f"{r}{q(path)}"
        points.append(f"{{ [ -e {target} ] || mkdir -p {target}; }}")
        binds.append(f"mount --bind {q(str(Path(host).resolve()))} {target}")
        if mode == ["ro"]:
            binds.append(f"mount -o remount,bind,ro {target}")
    # Mount points are made before the root turns read-only, the volumes mounted after.
    ro = [f"mount -o remount,bind,ro {r}"]
    env = {**image["env"], **dict(kv.split("=", 1) for kv in args.env)}
    program = image["entrypoint"] + (args.args or image["cmd"])
    uid, _, gid = image["user"].partition(":")
    inner = ["env", "-i", "-C", image["workdir"], *(f"{k}={v}" for k, v in env.items()), *program]
    script = " && ".join(mounts + points + ro + binds) + (
        f" && exec chroot --userspec={q(uid)}:{q(gid or uid)} {r} " + " ".join(q(a) for a in inner))
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--bin", required=True)
    b.add_argument("--duckdb-home", required=True)
    r = sub.add_parser("run")
    r.add_argument("--rootfs", required=True)
    r.add_argument("--volume", action="append", default=[])
    r.add_argument("--env", action="append", default=[])
    r.add_argument("args", nargs="*")
    a = p.parse_args()
    build(a) if a.cmd == "build" else run(a)


if __name__ == "__main__":
    main()
