// Compiled (not run) by `npm run typecheck`: the public types as an
// application sees them from dist/, with strict settings. A change that
// breaks typical usage fails the build.
import { ShapeProxyStream, type ServingStatus, type ShapeProxyErrorEvent, type StatusChangeEvent } from '../dist/index.js'

type Item = { id: number; title: string }

export function usage(signal: AbortSignal): () => void {
  const items = new ShapeProxyStream<Item>({
    url: 'http://localhost:3000/v1/shape',
    params: { table: 'items', where: 'id > $1', params: ['0'] },
    signal,
    statusPollIntervalMs: 10_000,
  })
  const offStatus = items.onStatus((event: StatusChangeEvent) => {
    const status: ServingStatus = event.status
    const previous: ServingStatus | undefined = event.previous
    void [status, previous, event.source, event.report?.replication?.lag_bytes]
  })
  const offError = items.onError(({ source, error, willRetry }: ShapeProxyErrorEvent) => {
    void [source, error.message, willRetry]
  })
  const titles: string[] = items.shape.currentRows.map((row) => row.title)
  void titles
  void items.shape.rows.then((rows: Item[]) => rows.length)
  void items.waitForStatus('live', { timeoutMs: 1_000 })
  const fallback: boolean = items.isFallback
  void fallback
  return () => {
    offStatus()
    offError()
    items.close()
  }
}
