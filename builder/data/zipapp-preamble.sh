#!/bin/sh
# kubecrate-installer: a Python zipapp (`unzip -l` lists it) behind this sh preamble, which
# finds a Python >= 3.6 to run it with: python3, else /usr/libexec/platform-python (EL8), else
# python3.6. CentOS 7 minimal has Python 2 only: then the python3 RPMs inside the bundle given
# with --bundle (a tar: listed and extracted with tar; a cache folder: its repo/Packages/ read
# in place; docs/bundle-format.md, "Bundle sources") are checked with `rpm -K` against the keys already in the host's rpm database
# (the CentOS key), installed with `rpm -Uvh`, and the installer carries on with them. A fresh
# minimal host has the CentOS key only as a file until its first `yum install`: then the
# host's own /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7 is imported, if and only if its full
# fingerprint equals the one pinned below when this .pyz was built (and signed).
# Nothing below runs past the final `exit`; the zip data follows it.

me=$0
say() { printf 'kubecrate-installer: %s\n' "$*" >&2; }
# The vendor key that signs the bundle's python3 RPMs: 40 hex digits, set by builder/zipapp.py.
vendor_fingerprint=@VENDOR_FINGERPRINT@

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
            "$candidate" -I -c 'import sys; sys.exit(sys.version_info < (3, 6))' </dev/null >/dev/null 2>&1; then
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
root=/
previous=
for arg in "$@"; do
    case $previous in --bundle) bundle=$arg ;; --root) root=$arg ;; esac
    case $arg in --bundle=*) bundle=${arg#--bundle=} ;; --root=*) root=${arg#--root=} ;; esac
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
if [ -d "$bundle" ]; then  # a cache folder (/var/lib/kubecrate/bundles/<digest>)
    members=
    for path in "$bundle"/repo/Packages/*.rpm; do
        [ -f "$path" ] && [ ! -L "$path" ] && members="$members repo/Packages/${path##*/}"
    done
else
    members=$(tar -tf "$bundle") || { say "cannot list $bundle with tar"; exit 3; }
fi
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
rpms=$work/repo/Packages
if [ -d "$bundle" ]; then
    rpms=$bundle/repo/Packages  # rpm -K and rpm -Uvh read the cached RPMs in place
else
    # shellcheck disable=SC2086  # one member per line, no globbing
    tar -xf "$bundle" -C "$work" $wanted || { say "cannot extract the python3 RPMs from $bundle"; exit 3; }
fi
set +f
IFS=$old_ifs

hint_key() {
    say "the bundle may be damaged or forged. Check it with minisign (see --help), and that the CentOS key is imported:"
    say "    rpm -q gpg-pubkey; rpm --import /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7"
}

# Fingerprints of the primary keys in a key file, one per line, upper case; "?" for a key
# whose fingerprint gpg did not print, so that no key can go unseen. gnupg 2.0 (CentOS 7)
# prints "pub  4096R/F4A80EB5 ..." then "      Key fingerprint = 6341 AB27 ...  ... 0EB5"
# (g10/mainproc.c list_node, g10/keylist.c print_fingerprint); gnupg >= 2.1 prints no
# fingerprint when given a file without a command, so its colon listing is read then
# ("pub:" and "fpr:" records, field 10: doc/DETAILS).
key_fingerprints() {
    listed=$(gpg --batch --no-tty --homedir "$work/gnupg" --with-fingerprint "$1" 2>/dev/null |
        awk '/^pub/ { if (open) print "?"; open = 1; next }
             /^sub/ { if (open) print "?"; open = 0; next }
             { line = $0; sub(/^[ \t]*Key fingerprint =/, "", line); gsub(/[ \t]/, "", line)
               if (open && line ~ /^[0-9A-Fa-f]+$/ && length(line) == 40) {
                   print toupper(line); open = 0 } }
             END { if (open) print "?" }')
    case $listed in
        *"?"*|"")
            listed=$(gpg --batch --no-tty --homedir "$work/gnupg" --with-colons \
                    --with-fingerprint "$1" 2>/dev/null |
                awk -F: '$1 == "pub" { if (open) print "?"; open = 1; next }
                         $1 == "sub" { if (open) print "?"; open = 0; next }
                         $1 == "fpr" && open { print toupper($10); open = 0 }
                         END { if (open) print "?" }') ;;
    esac
    printf '%s\n' "$listed"
}

# The vendor key is in the rpm database (gpg-pubkey-<last 8 digits>), or the host's own copy
# of it is imported now: only when gpg reports exactly one key, with the pinned fingerprint.
vendor_key=${root%/}/etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
short=$(printf '%s' "$vendor_fingerprint" | cut -c33-40 | tr 'A-F' 'a-f')
if ! rpm -q "gpg-pubkey-$short" >/dev/null 2>&1; then
    if ! command -v gpg >/dev/null 2>&1; then
        say "the CentOS key (fingerprint $vendor_fingerprint) is not in this host's rpm database, and there is no gpg to check $vendor_key with"
        hint_key
        exit 3
    fi
    mkdir -m 700 "$work/gnupg" || exit 1
    found=$(key_fingerprints "$vendor_key")
    if [ "$found" != "$vendor_fingerprint" ]; then
        say "the CentOS key (fingerprint $vendor_fingerprint) is not in this host's rpm database, and $vendor_key is not that key (gpg --with-fingerprint reports: $(printf '%s' "${found:-no key}" | tr '\n' ' '))"
        hint_key
        exit 3
    fi
    rpm --import "$vendor_key" || { say "rpm --import $vendor_key failed"; exit 3; }
    say "imported $vendor_key into the rpm database: its fingerprint is the pinned $vendor_fingerprint"
fi

# A signature must have been checked, not only the digests: rpm -K says OK for unsigned
# packages too. rpm 4.11 (EL7) lists the checks ("rsa sha1 (md5) pgp md5 OK"); rpm >= 4.14
# says "digests signatures OK". A missing key fails with "NOT OK" / "NOKEY".
install=
for name in $wanted; do
    rpmfile=$rpms/${name##*/}
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
        hint_key
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
