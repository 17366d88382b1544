"""Polls an HTTPS URL every INTERVAL seconds for DURATION seconds (without verifying TLS) and
writes one line per attempt, `<monotonic seconds> <1|0>`, flushed, to stdout.

python3 poller.py URL INTERVAL DURATION
"""

import ssl
import sys
import time
import urllib.request


def main(url: str, interval: str, duration: str) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Never a proxy from the environment: the VIP exists only inside the test namespaces.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    step, end = float(interval), time.monotonic() + float(duration)
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with opener.open(url, timeout=step * 5) as resp:
                ok = resp.status == 200
        except Exception:
            ok = False
        sys.stdout.write("{:.3f} {}\n".format(started, 1 if ok else 0))
        sys.stdout.flush()
        time.sleep(max(0.0, step - (time.monotonic() - started)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
