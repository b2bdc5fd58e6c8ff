// The WebSocket client: Backpack-style SUBSCRIBE messages, `{stream, data}` frames, and a
// reconnect with backoff that re-subscribes everything (the owner resnapshots on `onOpen`).

/**
 * @typedef {object} StreamHandlers
 * @property {(stream: string, data: any) => void} onFrame a data frame
 * @property {() => void} onOpen connected (first time or after a reconnect): resnapshot here
 * @property {(reason: string) => void} onDown the connection dropped or could not be opened
 * @property {(message: string) => void} [onError] an error frame from the server
 */

/**
 * The private-stream credentials of a SUBSCRIBE message: a JWT, or a Backpack signature.
 * @typedef {{jwt: string} | {signature: string[]}} PrivateAuth
 */

export class StreamClient {
  /**
   * @param {string} url e.g. `ws://127.0.0.1:8080/`
   * @param {StreamHandlers} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    /** @type {Set<string>} public streams wanted */
    this.streams = new Set();
    /** @type {Set<string>} private streams wanted */
    this.privateStreams = new Set();
    /** @type {(() => Promise<PrivateAuth>) | null} */
    this.privateAuth = null;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.backoffMs = 500;
    this.closed = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retry = undefined;
  }

  /** @returns {boolean} */
  get connected() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Opens the connection (and keeps reopening it until {@link close}). */
  open() {
    this.closed = false;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.handlers.onDown(String(error));
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.backoffMs = 500;
      if (this.streams.size) this.sendSubscribe([...this.streams]);
      if (this.privateStreams.size) this.subscribePrivate([...this.privateStreams]);
      this.handlers.onOpen();
    });
    socket.addEventListener('message', (event) => {
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (frame && typeof frame.stream === 'string') this.handlers.onFrame(frame.stream, frame.data);
      else if (frame && frame.error) this.handlers.onError?.(String(frame.error.message ?? JSON.stringify(frame.error)));
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.handlers.onDown(event.reason || `closed (${event.code})`);
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.closed) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.open(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
  }

  /** Closes for good. */
  close() {
    this.closed = true;
    clearTimeout(this.retry);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  /** Drops the connection as a network failure would (used by tests of the reconnect path). */
  drop() {
    this.socket?.close(4000, 'dropped by the page');
  }

  /**
   * Replaces the public subscriptions.
   * @param {string[]} streams
   */
  setStreams(streams) {
    const old = [...this.streams].filter((s) => !streams.includes(s));
    const added = streams.filter((s) => !this.streams.has(s));
    this.streams = new Set(streams);
    if (this.connected) {
      if (old.length) this.send({ method: 'UNSUBSCRIBE', params: old });
      if (added.length) this.sendSubscribe(added);
    }
  }

  /**
   * Sets (or with null clears) the private subscriptions and their credentials.
   * @param {string[]} streams
   * @param {(() => Promise<PrivateAuth>) | null} auth
   */
  setPrivate(streams, auth) {
    if (this.connected && this.privateStreams.size) this.send({ method: 'UNSUBSCRIBE', params: [...this.privateStreams] });
    this.privateStreams = new Set(auth ? streams : []);
    this.privateAuth = auth;
    if (this.connected && this.privateStreams.size) this.subscribePrivate([...this.privateStreams]);
  }

  /** @param {string[]} params */
  sendSubscribe(params) {
    this.send({ method: 'SUBSCRIBE', params });
  }

  /** @param {string[]} params */
  async subscribePrivate(params) {
    if (!this.privateAuth) return;
    const auth = await this.privateAuth();
    this.send({ method: 'SUBSCRIBE', params, ...auth });
  }

  /** @param {object} message */
  send(message) {
    if (this.connected) this.socket?.send(JSON.stringify(message));
  }
}
