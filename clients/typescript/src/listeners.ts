// A minimal typed listener set (no Node EventEmitter, so the package also
// runs in browsers). A throwing listener does not stop the others: its error
// is rethrown asynchronously, where it is reported as uncaught.

export class Listeners<Event> {
  readonly #listeners = new Set<(event: Event) => void>()

  /** Adds a listener; returns the function that removes it. */
  add(listener: (event: Event) => void): () => void {
    // Wrapped so that the same function can be added twice and removed once.
    const entry = (event: Event) => listener(event)
    this.#listeners.add(entry)
    return () => {
      this.#listeners.delete(entry)
    }
  }

  emit(event: Event): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event)
      } catch (error) {
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }

  clear(): void {
    this.#listeners.clear()
  }
}
