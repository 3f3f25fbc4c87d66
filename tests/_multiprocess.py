"""Helpers for tests that start several processes (imported inside tests)."""
import os


def run_two_processes(script: str, timeout: float = 600) -> list:
  """Runs `python script --process i PORT` for i = 0, 1 with jax.distributed on
  localhost (one CPU device each); returns each process's last stdout line as JSON."""
  import json
  import socket
  import subprocess
  import sys
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  procs = [subprocess.Popen([sys.executable, script, "--process", str(i), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
