// Package rootfs builds and caches the root filesystems of the built-in
// templates from Debian packages.
//
// A Recipe names a Debian package set plus a shell script run as root in a
// chroot. Recipes stack: a child starts from a copy of its parent's tree.
// Built trees live in one machine-wide cache (DefaultCacheDir) keyed by a hash
// of the recipe chain, so tests, CI and `make run` build each recipe once per
// machine.
package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Suite is the Debian release every recipe is built from.
const Suite = "bookworm"

// builderVersion is folded into every hash. Bump it when the way a tree is
// built changes (mounts, cleanup, debootstrap flags) so old caches are not
// reused for a differently built tree.
const builderVersion = "4"

// Recipe describes one root filesystem.
type Recipe struct {
	Name     string   // [a-z0-9-]+, also the cache directory prefix
	Parent   string   // recipe this one starts from; "" = debootstrap a fresh tree
	Packages []string // Debian packages installed with apt-get (no recommends)
	// Omit are packages that others depend on but the tree does without:
	// a placeholder package provides them, so apt installs neither them nor
	// what they pull in (python3-scipy hard-depends on pythran, a compiler
	// used only to build scipy, which brings gcc, g++ and boost: ~500 MB).
	Omit   []string
	Script string // POSIX shell run as root in a chroot after the packages
}

// Hash returns the cache key of r given the hash of its parent ("" when r
// has no parent). It covers everything that changes the resulting tree: the
// name, the parent, the package list as written (a reorder costs one
// rebuild, which is cheaper than reasoning about apt's resolver), the script,
// the omitted packages, the Debian suite and the builder version.
func Hash(r Recipe, parentHash string) string {
	h := sha256.New()
	// Length-prefixed fields, so "a"+"bc" never hashes like "ab"+"c".
	field := func(s string) { fmt.Fprintf(h, "%d:%s;", len(s), s) }
	field("sbx-rootfs/" + builderVersion)
	field(Suite)
	field(r.Name)
	field(r.Parent)
	field(parentHash)
	field(fmt.Sprint(len(r.Packages)))
	for _, p := range r.Packages {
		field(p)
	}
	field(r.Script)
	// Only when set, so the hashes (cache keys) of recipes without it stay
	// what they were.
	if len(r.Omit) > 0 {
		field("omit")
		field(fmt.Sprint(len(r.Omit)))
		for _, p := range r.Omit {
			field(p)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// validName reports whether name is safe to use in a cache path.
func validName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return !strings.HasPrefix(name, "-")
}

// Builtins returns the recipes sbx ships, parents before children.
func Builtins() []Recipe {
	return []Recipe{baseRecipe(), codeInterpreterRecipe()}
}

// Lookup returns the built-in recipe called name.
func Lookup(name string) (Recipe, bool) {
	for _, r := range Builtins() {
		if r.Name == name {
			return r, true
		}
	}
	return Recipe{}, false
}

func baseRecipe() Recipe {
	return Recipe{
		Name: "base",
		// Kept tight: every fresh machine (CI, `make run`) builds this first.
		// No recommends are installed, so everything needed is listed.
		Packages: []string{
			"bash", "coreutils", "procps", "sudo", "less", "vim-tiny",
			"ca-certificates", "curl", "git", "iproute2", "iputils-ping",
			"netcat-openbsd", "netbase", "unzip", "xz-utils",
			"python3", "python3-pip", "python3-venv",
			"nodejs", "npm",
		},
		Script: baseScript,
	}
}

// baseScript makes the tree look like an E2B sandbox: user "user" with
// passwordless sudo, apt usable without SETUID/SETGID (runtime notes), and
// the mountpoints the runtime driver binds into.
const baseScript = `set -eu
useradd --create-home --uid 1000 --user-group --shell /bin/bash user
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
visudo -cf /etc/sudoers.d/user >/dev/null

# apt drops privileges to _apt with setuid, which a sandbox without
# SETUID/SETGID cannot do.
echo 'APT::Sandbox::User "root";' > /etc/apt/apt.conf.d/90sbx-sandbox-user

# The runtime sets the hostname; a file here would contradict it.
rm -f /etc/hostname

# E2B templates let "pip install x" work; Debian 12 refuses it (PEP 668)
# unless told otherwise. As user, pip then installs into ~/.local.
printf '[global]\nbreak-system-packages = true\n' > /etc/pip.conf

# C.UTF-8 ships with libc6; no locales package needed.
echo 'LANG=C.UTF-8' > /etc/default/locale

# Sandboxes hold no CAP_NET_RAW (raw sockets forge frames on the shared
# bridge), and the kernel refuses to exec a binary whose file capability
# asks for one the bounding set lacks: ping (cap_net_raw) would fail with
# "Operation not permitted". Without it, ping uses ICMP datagram sockets,
# which net.ipv4.ping_group_range allows in every sandbox network namespace.
python3 - <<'EOF'
import os
for d in ("/usr/bin", "/usr/sbin"):
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isfile(p) and not os.path.islink(p):
            try:
                os.removexattr(p, "security.capability")
            except OSError:
                pass
EOF

# Mountpoints for the agent binaries and its socket directory.
mkdir -p /.sbx/bin /.sbx/run
chmod 0755 /.sbx /.sbx/bin /.sbx/run

# minbase has no /etc/hosts: without it "localhost" does not resolve when
# the tree is used without the runtime's generated file (chroot, tests).
if [ ! -e /etc/hosts ]; then
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
fi
[ -e /etc/mtab ] || ln -s ../proc/self/mounts /etc/mtab

# Every command of the E2B SDKs runs in a login shell (bash -l -c), and
# Debian's profiles fork twice per login: "$(id -u)" in /etc/profile and
# "mesg n" in root's ~/.profile (6 ms of a command's time at load 13).
# bash knows its EUID; sh still asks id. mesg only matters on a terminal.
sed -i 's/"$(id -u)"/"${EUID:-$(id -u)}"/' /etc/profile
sed -i 's/^mesg n 2> \/dev\/null || true$/[ -t 0 ] \&\& mesg n 2> \/dev\/null || true/' /root/.profile
if grep -q '"$(id -u)"' /etc/profile || grep -q '^mesg' /root/.profile; then
	echo "Debian's login profiles changed: the fork-free edits did not apply" >&2
	exit 1
fi

# A regular file the runtime can bind over or rewrite in the upper layer.
if [ -L /etc/resolv.conf ] || [ ! -e /etc/resolv.conf ]; then
	rm -f /etc/resolv.conf
	: > /etc/resolv.conf
fi
`

func codeInterpreterRecipe() Recipe {
	return Recipe{
		Name:   "code-interpreter",
		Parent: "base",
		Packages: []string{
			"python3-ipykernel", "python3-numpy", "python3-pandas",
			"python3-matplotlib", "python3-scipy", "python3-seaborn",
			"python3-requests", "python3-bs4", "python3-pil",
			// The optimised BLAS numpy and scipy use; it used to arrive
			// through pythran's build dependencies (libopenblas-dev).
			"libopenblas0",
			// The R kernel (language "r"): ~60 MB with its dependencies.
			"r-base-core", "r-cran-irkernel",
			// The JavaScript/TypeScript kernel's parser and TypeScript
			// transform (codeinterp's node driver loads them from
			// /usr/share/nodejs). npm already pulls both in; listed because
			// the kernel needs them, not only npm.
			"node-acorn", "node-babel7",
		},
		// Kernels never compile C++ or attach a debugger: pythran (a
		// build-time compiler scipy hard-depends on) brings gcc, g++, boost
		// and openblas headers (~500 MB), debugpy's gdb another 25 MB.
		Omit:   []string{"python3-pythran", "gdb"},
		Script: codeInterpreterScript,
	}
}

// codeInterpreterScript bakes the matplotlib font cache (3.4 s on first
// import otherwise, runtime notes) for both users kernels run as, and checks
// the kernelspecs the code interpreter starts and the libraries its
// JavaScript kernel loads.
const codeInterpreterScript = `set -eu
warm='import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot; import matplotlib.font_manager'
runuser -u user -- env HOME=/home/user python3 -c "$warm"
HOME=/root python3 -c "$warm"
ls /home/user/.cache/matplotlib/fontlist-*.json >/dev/null
python3 -c 'import scipy.optimize, scipy.stats, scipy.signal, PIL.Image'

k=/usr/share/jupyter/kernels/python3
if [ ! -f "$k/kernel.json" ]; then
	mkdir -p "$k"
	cat > "$k/kernel.json" <<'EOF'
{
 "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "Python 3 (ipykernel)",
 "language": "python",
 "metadata": {"debugger": true}
}
EOF
fi
test -f /usr/share/jupyter/kernels/ir/kernel.json
R --slave -e 'library(IRkernel)' >/dev/null
node -e 'require("/usr/share/nodejs/acorn"); require("/usr/share/nodejs/@babel/core")'
if command -v g++ >/dev/null || [ -d /usr/include/boost ]; then
	echo "a C++ toolchain was installed although the recipe omits it" >&2
	exit 1
fi
`
