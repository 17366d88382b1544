"""Polls an HTTPS URL every INTERVAL seconds for DURATION seconds (without verifying TLS) and
writes one line per attempt, `<monotonic start> <1|0> <monotonic end>`, flushed, to stdout.

python3 poller.py URL INTERVAL DURATION [overlap]

By default one poll follows another and each gives up after 5 intervals, so while the URL
hangs the polls (and what a window measured from them can resolve) are 5 intervals apart.
With `overlap` a poll starts every INTERVAL whatever the earlier ones are doing, each in its
own thread with OVERLAP_TIMEOUT seconds to answer: the answers then show when the endpoint
answered again to within one interval, and an answer that took a detour (haproxy's connect
timeout, then another backend) is counted when it arrived.
"""

import ssl
import sys
import threading
import time
import urllib.request

OVERLAP_TIMEOUT = 3.0


def main(url: str, interval: str, duration: str, mode: str = "") -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Never a proxy from the environment: the VIP exists only inside the test namespaces.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    step, end = float(interval), time.monotonic() + float(duration)
    overlap = mode == "overlap"
    lock = threading.Lock()

    def poll(timeout: float) -> None:
        started = time.monotonic()
        try:
            with opener.open(url, timeout=timeout) as resp:
                ok = resp.status == 200
        except Exception:
            ok = False
        with lock:
            sys.stdout.write("{:.3f} {} {:.3f}\n".format(started, 1 if ok else 0,
                                                        time.monotonic()))
            sys.stdout.flush()

    while time.monotonic() < end:
        started = time.monotonic()
        if overlap:  # at most OVERLAP_TIMEOUT / step polls are in flight at once
            threading.Thread(target=poll, args=(OVERLAP_TIMEOUT,), daemon=True).start()
        else:
            poll(step * 5)
        time.sleep(max(0.0, step - (time.monotonic() - started)))


if __name__ == "__main__":
    main(*sys.argv[1:5])
