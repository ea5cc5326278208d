#!/usr/bin/env bash
# Tawag installer for Debian 12 (bookworm): the system packages of the stack and the
# Apache Kafka jars, and the jars of ClickHouse's JDBC driver the tests connect with.
# Idempotent: a second run installs and downloads nothing.
#
#   deploy/install-debian.sh [KAFKA_LIBS_DIR]
#
# KAFKA_LIBS_DIR defaults to $TAWAG_KAFKA_LIBS, else ${TAWAG_LIBS_DIR:-<repo>/var/kafka-libs}/<version>,
# the place core.settings.Settings.kafka_libs points at. The Kafka version is
# $TAWAG_KAFKA_VERSION, else the default of Settings.kafka_version in core/settings.py.
# Runs as root, or through sudo for the package steps when started as another user
# (the jars are then fetched as that user, so they are owned by whoever runs the stack).
#
# The JDBC driver's jars go to $TAWAG_JDBC_LIBS, else <repo>/var/jdbc-libs/<version>, its
# version being the one pinned in deploy/jdbc/pom.xml (tests/warehouse/jdbc_driver.py
# reads the same place).
#
# Environment: SKIP_PACKAGES=1 skips the Debian packages (jars only).

set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$REPO/deploy/kafka/pom.xml"
JDBC_POM="$REPO/deploy/jdbc/pom.xml"
STAMP_NAME=".tawag-complete" # keep in step with tawag.kafka.STAMP_FILE

# The Kamailio/rtpengine packages are run by the project in the foreground with its own
# config; their Debian services must not start (they would hold ports 5060/2223).
PACKAGES=(
    kamailio kamailio-extra-modules kamailio-json-modules kamailio-utils-modules
    rtpengine-daemon sip-tester openjdk-17-jre-headless maven chromium
    openjdk-17-jdk-headless # javac: the JDBC test compiles its small Java program
)
DAEMONS=(kamailio rtpengine rtpengine-recording)
SERVICES=(kamailio rtpengine-daemon rtpengine-recording-daemon)

say() { printf '[tawag-install] %s\n' "$*"; }
die() {
    printf '[tawag-install] ERROR: %s\n' "$*" >&2
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# --- privileges -------------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo (package steps need root)"
    SUDO=(sudo)
fi

# --- Kafka version and libs dir -----------------------------------------------------------
default_version() {
    sed -n 's/^[[:space:]]*kafka_version: str = "\([^"]*\)".*/\1/p' "$REPO/core/settings.py" |
        head -n1
}
KAFKA_VERSION="${TAWAG_KAFKA_VERSION:-$(default_version)}"
[[ -n "$KAFKA_VERSION" ]] || die "cannot read kafka_version from $REPO/core/settings.py"
LIBS="${1:-${TAWAG_KAFKA_LIBS:-${TAWAG_LIBS_DIR:-$REPO/var/kafka-libs}/$KAFKA_VERSION}}"

# --- Debian packages --------------------------------------------------------------------
is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

python_needs_venv() {
    # Debian's python3 ships without ensurepip unless python3-venv is installed.
    ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

daemon_pids() {
    local name
    for name in "${DAEMONS[@]}"; do
        pgrep -x "$name" 2>/dev/null || true
    done | sort -n
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
restore_policy() {
    if [[ -n "$POLICY_BACKUP" ]]; then
        "${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY"
    else
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}

block_service_starts() {
    # invoke-rc.d and deb-systemd-invoke consult policy-rc.d: 101 = "action forbidden",
    # so no postinst starts kamailio or rtpengine. An existing policy is restored after.
    if [[ -e "$POLICY" ]]; then
        POLICY_BACKUP="$("${SUDO[@]}" mktemp "$POLICY.tawag.XXXXXX")"
        "${SUDO[@]}" cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    printf '#!/bin/sh\n# written by tawag install-debian.sh while installing\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    trap 'restore_policy' EXIT
}

disable_services() {
    # Also keep them from starting at the next boot (the project starts its own).
    local svc
    for svc in "${SERVICES[@]}"; do
        if [[ -d /run/systemd/system ]]; then
            "${SUDO[@]}" systemctl disable "$svc.service" >/dev/null 2>&1 || true
        elif [[ -x "/etc/init.d/$svc" ]]; then
            "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
}

stop_new_daemons() {
    # Daemons that appeared during the install (and only those: a stack the operator is
    # already running keeps its processes) are stopped by PID.
    local before="$1" after pid
    after="$(daemon_pids)"
    for pid in $after; do
        if ! grep -qx "$pid" <<<"$before"; then
            say "stopping daemon started by the package install: pid $pid ($(ps -o comm= -p "$pid" || true))"
            "${SUDO[@]}" kill -TERM "$pid" 2>/dev/null || true
        fi
    done
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if python_needs_venv && ! is_installed python3-venv; then
        missing+=(python3-venv)
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages: all present (${#PACKAGES[@]} checked)"
        return
    fi
    say "packages: installing ${missing[*]}"
    local before
    before="$(daemon_pids)"
    block_service_starts
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null ||
        die "apt-get install failed for: ${missing[*]}"
    restore_policy
    trap - EXIT
    disable_services
    stop_new_daemons "$before"
    for pkg in "${missing[@]}"; do
        is_installed "$pkg" || die "package $pkg is still not installed"
    done
    say "packages: installed ${#missing[@]}"
}

# --- Java ------------------------------------------------------------------------------
check_java() {
    command -v java >/dev/null 2>&1 || die "java not found on PATH (openjdk-17-jre-headless)"
    command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (maven)"
    local major
    major="$(java -XshowSettings:properties -version 2>&1 |
        sed -n 's/^[[:space:]]*java.specification.version = \([0-9]*\).*/\1/p')"
    [[ "${major:-0}" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found '${major:-?}'"
    say "java: $major"
}

# --- Kafka jars -------------------------------------------------------------------------
fetch_kafka_jars() {
    if [[ -f "$LIBS/$STAMP_NAME" ]]; then
        say "kafka $KAFKA_VERSION jars: present in $LIBS"
        return
    fi
    say "kafka $KAFKA_VERSION jars: downloading into $LIBS"
    mkdir -p "$(dirname "$LIBS")"
    # Download next to the target and move into place, so an interrupted download never
    # looks complete and never mixes with an earlier partial one.
    local tmp
    tmp="$(mktemp -d "$LIBS.partial.XXXXXX")"
    if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2 || true
        rm -rf "$tmp" "$tmp.log"
        die "maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see above)"
    fi
    rm -f "$tmp.log"
    compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
        die "download incomplete: kafka_2.13-$KAFKA_VERSION.jar missing"
    printf 'kafka_version=%s\njars=%s\nfetched=%s\n' "$KAFKA_VERSION" \
        "$(find "$tmp" -name '*.jar' | wc -l)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        >"$tmp/$STAMP_NAME"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    chmod 755 "$LIBS"
    say "kafka $KAFKA_VERSION jars: $(find "$LIBS" -name '*.jar' | wc -l) jars ready"
}

# --- ClickHouse JDBC driver jars (tests) ---------------------------------------------------
jdbc_version() {
    sed -n 's:.*<clickhouse.jdbc.version>\([^<]*\)</clickhouse.jdbc.version>.*:\1:p' "$JDBC_POM" |
        head -n1
}

fetch_jdbc_jars() {
    local version dir tmp
    version="$(jdbc_version)"
    [[ -n "$version" ]] || die "cannot read clickhouse.jdbc.version from $JDBC_POM"
    dir="${TAWAG_JDBC_LIBS:-$REPO/var/jdbc-libs/$version}"
    if [[ -f "$dir/$STAMP_NAME" ]]; then
        say "clickhouse-jdbc $version jars: present in $dir"
        return
    fi
    say "clickhouse-jdbc $version jars: downloading into $dir"
    mkdir -p "$(dirname "$dir")"
    tmp="$(mktemp -d "$dir.partial.XXXXXX")"
    if ! mvn -B -q -Dstyle.color=never -f "$JDBC_POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2 || true
        rm -rf "$tmp" "$tmp.log"
        die "maven could not fetch com.clickhouse:clickhouse-jdbc:$version (see above)"
    fi
    rm -f "$tmp.log"
    compgen -G "$tmp/clickhouse-jdbc-$version.jar" >/dev/null ||
        die "download incomplete: clickhouse-jdbc-$version.jar missing"
    printf 'clickhouse_jdbc_version=%s\njars=%s\nfetched=%s\n' "$version" \
        "$(find "$tmp" -name '*.jar' | wc -l)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        >"$tmp/$STAMP_NAME"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    chmod 755 "$dir"
    say "clickhouse-jdbc $version jars: $(find "$dir" -name '*.jar' | wc -l) jars ready"
}

main() {
    [[ -r /etc/debian_version ]] || die "this installer is for Debian 12 (no /etc/debian_version)"
    if [[ "${SKIP_PACKAGES:-0}" == 1 ]]; then
        say "packages: skipped (SKIP_PACKAGES=1)"
    else
        install_packages
    fi
    check_java
    fetch_kafka_jars
    fetch_jdbc_jars
    say "done"
}

# Sourcing the file (for tests) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
