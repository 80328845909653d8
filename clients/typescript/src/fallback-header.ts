// Wraps the fetch that ShapeStream uses for shape requests, to observe every
// response's `electric-fallback-mode` header (and failed requests) without
// touching the request or consuming the body.

/** The header shapeproxy sets on every shape response served in fallback mode. */
export const FALLBACK_MODE_HEADER = 'electric-fallback-mode'

export type ShapeRequestObservation =
  | { kind: 'request'; url: string }
  | { kind: 'response'; url: string; status: number; fallback: boolean }
  | { kind: 'failure'; url: string; error: unknown; aborted: boolean }

/** True when a response carries `electric-fallback-mode: true`. */
export function isFallbackResponse(headers: Headers): boolean {
  return headers.get(FALLBACK_MODE_HEADER)?.trim().toLowerCase() === 'true'
}

export function observingFetch(
  fetchClient: typeof fetch,
  observe: (observation: ShapeRequestObservation) => void,
): typeof fetch {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.toString() : input.url
    observe({ kind: 'request', url })
    let response: Response
    try {
      response = await fetchClient(input, init)
    } catch (error) {
      observe({ kind: 'failure', url, error, aborted: init?.signal?.aborted ?? false })
      throw error
    }
    observe({ kind: 'response', url, status: response.status, fallback: isFallbackResponse(response.headers) })
    return response
  }
}
