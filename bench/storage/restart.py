#!/usr/bin/env python3
"""bench/storage/restart.py: one timed start of the proxy over an existing data dir.

usage: restart.py --log FILE --url URL [--timeout S] [--hold S] -- PROXY ARGV...

Starts PROXY ARGV (t0 = just before fork/exec), copies its output to --log
while watching for the lines `shapes: N loaded from ...` and
`http: listening ...`; once listening, GETs --url until it answers 200.
Then reads VmRSS/VmHWM from /proc/<pid>/status, optionally waits --hold
seconds and reads them again, sends SIGTERM and waits for the exit.

Prints one JSON object: loaded_s, listening_s, first_200_s, shapes_loaded,
rss_kb, hwm_kb, shutdown_s, exit_code, body_bytes. Exit status 1 when the
proxy died, never listened or never answered 200 within --timeout.
"""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--hold", type=float, default=0)
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    argv = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv

    loaded = threading.Event()
    listening = threading.Event()
    result = {"loaded_s": None, "listening_s": None, "shapes_loaded": None}
    log = open(args.log, "ab")

    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def pump():
        for raw in proc.stdout:
            now = time.monotonic()
            log.write(raw)
            log.flush()
            line = raw.decode("utf-8", "replace")
            if result["loaded_s"] is None:
                m = re.search(r"shapes: (\d+) loaded from", line)
                if m:
                    result["loaded_s"] = now - t0
                    result["shapes_loaded"] = int(m.group(1))
                    loaded.set()
            if result["listening_s"] is None and "http: listening" in line:
                result["listening_s"] = now - t0
                listening.set()
        listening.set()  # EOF: the proxy exited

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def give_up(why):
        result["error"] = why
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(json.dumps(result))
        sys.exit(1)

    if not listening.wait(args.timeout) or result["listening_s"] is None:
        give_up("never logged 'http: listening' (exit %s)" % proc.poll())

    url = urllib.parse.urlsplit(args.url)
    target = url.path + ("?" + url.query if url.query else "")
    deadline = t0 + args.timeout
    body_bytes = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            give_up("the proxy exited with %s before answering 200" % proc.returncode)
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
            conn.request("GET", target)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200:
                result["first_200_s"] = time.monotonic() - t0
                body_bytes = len(body)
                break
            result["last_status"] = resp.status
        except OSError as e:
            result["last_error"] = str(e)
        time.sleep(0.005)
    else:
        give_up("no 200 within the timeout")
    result["body_bytes"] = body_bytes
    st = proc_status(proc.pid)
    result["rss_kb"], result["hwm_kb"] = st.get("VmRSS"), st.get("VmHWM")
    if args.hold > 0:
        time.sleep(args.hold)
        st = proc_status(proc.pid)
        result["rss_hold_kb"], result["hwm_hold_kb"] = st.get("VmRSS"), st.get("VmHWM")
    t_stop = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        result["exit_code"] = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        result["exit_code"] = proc.wait()
        result["error"] = "did not exit within 300 s of SIGTERM"
    result["shutdown_s"] = time.monotonic() - t_stop
    reader.join(timeout=5)
    print(json.dumps(result))
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
