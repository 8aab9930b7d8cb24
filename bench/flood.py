#!/usr/bin/env python3
"""Connections that write 1 MiB of pipelined requests each and never read their answers.

usage: bench/flood.py <gateway port> <connections> <gateway pid> [path]

Prints the gateway's RSS before and its peak after (/proc/<pid>/status), how long until the gateway
had closed them all as slow clients (gateway_connections_timed_out_total), its CPU seconds, and
the latency of /healthz on a fresh connection four times a second throughout. Start the gateway
with a short GATEWAY_REQUEST_TIMEOUT_MS (e.g. 3000) to see the closes soon.
"""
import socket, selectors, sys, time, threading, os
port=int(sys.argv[1]); n=int(sys.argv[2]); pid=int(sys.argv[3]); req=sys.argv[4] if len(sys.argv)>4 else "/v1/baskets/x"
one=f"GET {req} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
payload=one*((1<<20)//len(one))
def mem():
    d={}
    for l in open(f"/proc/{pid}/status"):
        k,v=l.split(":",1); d[k]=v.strip()
    return int(d["VmRSS"].split()[0]), int(d["VmHWM"].split()[0])
def cpu():
    f=open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK')
print("before", mem(), flush=True)
probes=[]
stop=False
def probe():
    while not stop:
        t=time.time()
        try:
            s=socket.create_connection(("127.0.0.1",port),timeout=30)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data=b""
            while True:
                d=s.recv(4096)
                if not d: break
                data+=d
            s.close()
            probes.append((time.time()-t, data[:12]))
        except Exception as e:
            probes.append((time.time()-t, str(e)))
        time.sleep(0.25)
th=threading.Thread(target=probe); th.start()
sel=selectors.DefaultSelector()
socks=[]
t0=time.time(); c0=cpu()
for i in range(n):
    s=socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096) if len(sys.argv)>5 else None
    s.connect(("127.0.0.1",port)); s.setblocking(False)
    socks.append([s,0]); sel.register(s, selectors.EVENT_WRITE, len(socks)-1)
opened=time.time()
open_count=n
closed_at=None
while True:
    ev=sel.select(timeout=0.5)
    for key,_ in ev:
        s,off=socks[key.data]
        try:
            k=s.send(payload[off:off+65536])
            socks[key.data][1]+=k
            if socks[key.data][1]>=len(payload):
                sel.unregister(s)
        except BlockingIOError: pass
        except OSError:
            sel.unregister(s); socks[key.data][1]=-1
    import urllib.request
    if int(time.time()*2)%2==0:
        m=urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        vals={l.split()[0]:float(l.split()[1]) for l in m.splitlines() if l and not l.startswith("#") and len(l.split())==2}
        if vals.get("gateway_connections_timed_out_total",0)>=n: closed_at=time.time(); break
    if time.time()-opened>300: break
stop=True; th.join()
print("closed after", (closed_at or time.time())-opened, "cpu s", cpu()-c0)
print("after", mem())
lat=sorted(p[0] for p in probes)
print("probes", len(probes), "median", lat[len(lat)//2], "max", lat[-1], "bad", [p for p in probes if p[1]!=b"HTTP/1.1 200"][:3])
