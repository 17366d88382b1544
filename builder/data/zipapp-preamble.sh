#!/bin/sh
# kubecrate-installer: a Python zipapp (`unzip -l` lists it) behind this sh preamble, which
# finds a Python >= 3.6 to run it with: python3, else /usr/libexec/platform-python (EL8), else
# python3.6. CentOS 7 minimal has Python 2 only: then the python3 RPMs inside the bundle given
# with --bundle are checked with `rpm -K` against the keys already in the host's rpm database
# (the CentOS key), installed with `rpm -Uvh`, and the installer carries on with them.
# Nothing below runs past the final `exit`; the zip data follows it.

me=$0
say() { printf 'kubecrate-installer: %s\n' "$*" >&2; }

# shiv extracts the bundled packages here, not under $HOME (read-only or missing for services).
if [ -z "${SHIV_ROOT:-}" ]; then
    SHIV_ROOT=/var/lib/kubecrate/shiv
    if [ "$(id -u)" != 0 ] && ! { mkdir -p "$SHIV_ROOT" && [ -w "$SHIV_ROOT" ]; } 2>/dev/null; then
        SHIV_ROOT=${HOME:?}/.cache/kubecrate/shiv  # not root: e.g. `verify` on a workstation
    fi
fi
export SHIV_ROOT

find_python() {
    for candidate in python3 /usr/libexec/platform-python python3.6; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 6))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if python=$(find_python); then
    exec "$python" -I "$me" "$@"
fi

# --- no Python 3: install it from the bundle ----------------------------------------------------
bundle=
previous=
for arg in "$@"; do
    case $previous in --bundle) bundle=$arg ;; esac
    case $arg in --bundle=*) bundle=${arg#--bundle=} ;; esac
    previous=$arg
done
if [ -z "$bundle" ]; then
    say "this host has no Python 3.6 or later (looked for python3, /usr/libexec/platform-python, python3.6)."
    say "Run me with --bundle X.tar so that I can install python3 from the bundle's RPMs, or install python3 first."
    exit 4
fi
if [ ! -r "$bundle" ]; then
    say "cannot read the bundle $bundle"
    exit 4
fi
for tool in tar rpm mktemp; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "no Python 3 on this host, and no '$tool' to install it from $bundle with"
        exit 4
    fi
done

arch=$(uname -m)
members=$(tar -tf "$bundle") || { say "cannot list $bundle with tar"; exit 3; }
wanted=
nl='
'
set -f
for name in $members; do
    case $name in
        repo/Packages/*/*|*..*) continue ;;
        repo/Packages/python3*.noarch.rpm|repo/Packages/python3*."$arch".rpm) ;;
        repo/Packages/libtirpc-[0-9]*."$arch".rpm) ;;
        *) continue ;;
    esac
    wanted=$wanted$name$nl
done
set +f
case $wanted in
    *repo/Packages/python3-[0-9]*) ;;
    *)
        say "no Python 3.6+ here, and $bundle carries no python3 RPM for $arch in repo/Packages/."
        exit 4
        ;;
esac

work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
old_ifs=$IFS
IFS=$nl
set -f
# shellcheck disable=SC2086  # one member per line, no globbing
tar -xf "$bundle" -C "$work" $wanted || { say "cannot extract the python3 RPMs from $bundle"; exit 3; }
set +f
IFS=$old_ifs

# A signature must have been checked, not only the digests: rpm -K says OK for unsigned
# packages too. rpm 4.11 (EL7) lists the checks ("rsa sha1 (md5) pgp md5 OK"); rpm >= 4.14
# says "digests signatures OK". A missing key fails with "NOT OK" / "NOKEY".
install=
for rpmfile in "$work"/repo/Packages/*.rpm; do
    result=$(rpm -K "$rpmfile" 2>&1)
    status=$?
    case $result in
        *"NOT OK"*|*NOKEY*|*MISSING*|*"not OK"*) status=1 ;;
        *" signatures OK"*|*" rsa "*|*" dsa "*|*" pgp "*|*" gpg "*) ;;
        *) status=1 ;;
    esac
    if [ "$status" != 0 ]; then
        say "refusing to install ${rpmfile##*/}: its signature does not verify against the keys in this host's rpm database:"
        printf '    %s\n' "$result" >&2
        say "the bundle may be damaged or forged. Check it with minisign (see --help), and that the CentOS key is imported:"
        say "    rpm -q gpg-pubkey; rpm --import /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7"
        exit 3
    fi
    name=$(rpm -qp --qf '%{NAME}' "$rpmfile" 2>/dev/null) || name=
    if [ -n "$name" ] && rpm -q "$name" >/dev/null 2>&1; then
        continue  # already installed (libtirpc often is)
    fi
    install="$install $rpmfile"
done

if [ -n "$install" ]; then
    say "no Python 3.6+ on this host: installing python3 from $bundle (signatures checked with rpm -K):"
    # shellcheck disable=SC2086  # the temporary paths hold no spaces
    rpm -Uvh $install >&2 || { say "rpm -Uvh failed: python3 is not installed"; exit 5; }
fi
rm -rf "$work"
trap - EXIT

if python=$(find_python); then
    say "installed; continuing with $python"
    exec "$python" -I "$me" "$@"
fi
say "installed the python3 RPMs from $bundle, but still find no Python 3.6+."
exit 5
