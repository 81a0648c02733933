// A failed listen() as the one actionable line the CLI prints (the gateway's port, its metrics port,
// in one process or from the cluster's primary): which port, why, and the option that changes it.
export function listenFailure(err: NodeJS.ErrnoException, port: number, hostname: string, flag: string): string {
  if (err.code === 'EADDRINUSE') return `port ${port} is already in use on ${hostname}: stop what holds it or pick another with ${flag}`;
  if (err.code === 'EACCES') return `no permission to listen on ${hostname}:${port}: pick a port above 1023 with ${flag}`;
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') return `cannot listen on ${hostname}:${port}: no such local address (check --hostname)`;
  return `cannot listen on ${hostname}:${port}: ${err.message}`;
}
