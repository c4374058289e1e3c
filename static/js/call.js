// The video call, shared by the patient's and the provider's pages: a WebRTC mesh among
// everyone admitted, signalled over the page's Socket.IO connection.
//
// Who offers: the people already in the call offer to each newcomer (the server tells
// them with `call_peer_joined`); a newcomer only answers. So two sides never offer to
// each other at once. If a peer's media path fails, the side that offered retries once
// with TURN only (iceTransportPolicy "relay"), and the page says so.
import { request } from "./socket.js";

const QUALITY_INTERVAL_MS = 10_000;

// A candidate names the ICE session it belongs to (its usernameFragment); one that is not
// the peer's current remote session's belongs to an offer still on its way.
function forAnotherOffer(peer, candidate) {
  const remote = peer.pc.remoteDescription;
  if (!candidate.usernameFragment || !remote) return false;
  const session = /a=ice-ufrag:(\S+)/.exec(remote.sdp);
  return Boolean(session) && session[1] !== candidate.usernameFragment;
}

export class Call {
  constructor({ socket, localStream, root, strings, onState = () => {}, onMedia = () => {} }) {
    this.socket = socket;
    this.localStream = localStream;
    this.root = root;
    this.S = strings;
    this.onState = onState;
    this.onMedia = onMedia; // after Mute or camera off, so the page can tell the others
    this.peers = new Map(); // sid -> { pc, offerer, relay, pending, tile, stats }
    this.queues = new Map(); // sid -> promise chain of that peer's signal messages
    // sid -> candidates that came before that peer's offer. The server relays a socket's
    // messages concurrently (several handlers at once), so a candidate can overtake the
    // offer it belongs to; dropped, a relay-only call would never connect.
    this.early = new Map();
    this.iceServers = [];
    this.state = "connecting";
    // The others may hear that we joined, and offer, before our own call_join reply (with
    // the ICE servers) is back: what they send waits for it, or a relay-only peer would be
    // made with no TURN server and never connect.
    this.ready = new Promise((resolve) => { this.markReady = resolve; });
    this.handlers = {
      call_peer_joined: ({ sid }) => this.enqueue(sid, () => this.offerTo(sid)),
      signal: (message) => this.enqueue(message.from, () => this.onSignal(message)),
      call_peer_left: ({ sid }) => this.drop(sid),
      call_ended: () => this.end("ended"),
    };
  }

  async join() {
    for (const [event, handler] of Object.entries(this.handlers)) this.socket.on(event, handler);
    this.attachSelf();
    this.setState("connecting", this.S.waiting_for_others);
    const reply = await request(this.socket, "call_join");
    if (!reply.ok) {
      this.setState("ended", reply.error || this.S.call_failed);
      return false;
    }
    this.iceServers = reply.ice_servers || [];
    this.markReady();
    this.qualityTimer = setInterval(() => this.sendQuality(), QUALITY_INTERVAL_MS);
    return true;
  }

  attachSelf() {
    const self = this.root.querySelector(".self video");
    if (self && this.localStream) self.srcObject = this.localStream;
  }

  // --- peers ---------------------------------------------------------------------------
  createPeer(sid, { offerer, relay = false }) {
    const config = { iceServers: this.iceServers };
    if (relay) config.iceTransportPolicy = "relay";
    const pc = new RTCPeerConnection(config);
    // Byte counters at creation, so the first quality sample already has a bitrate.
    const peer = { pc, offerer, relay, pending: [], tile: null,
                   stats: { bytesIn: 0, bytesOut: 0, at: performance.now() } };
    // Settled by close(): an operation still queued on a closed connection never settles
    // (the WebRTC spec abandons it), and would hold that peer's signal queue for good.
    peer.closed = new Promise((resolve) => { peer.markClosed = resolve; });
    if (this.localStream) {
      for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    }
    if (offerer) {
      // Someone without a camera or microphone (blocked, missing) still sees and hears the
      // others: without these, an offer from them has no media at all and never connects.
      for (const kind of ["audio", "video"]) {
        const sending = this.localStream?.getTracks().some((track) => track.kind === kind);
        if (!sending) pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) request(this.socket, "signal", { to: sid, candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ streams }) => this.showRemote(sid, peer, streams[0]);
    pc.onconnectionstatechange = () => this.onPeerState(sid, peer);
    this.peers.set(sid, peer);
    return peer;
  }

  async offerTo(sid, { relay = false, restart = false } = {}) {
    this.close(sid, { keepTile: true });
    const peer = this.createPeer(sid, { offerer: true, relay });
    // Until the offer is set, the state still reads "stable": the flag lets a crossing
    // offer see the collision (below) in that window too.
    peer.makingOffer = true;
    try {
      await peer.pc.setLocalDescription(await peer.pc.createOffer());
    } catch (error) {
      if (this.peers.get(sid) !== peer) return; // gave way to their offer meanwhile
      throw error;
    } finally {
      peer.makingOffer = false;
    }
    if (this.peers.get(sid) !== peer) return;
    const message = { to: sid, description: peer.pc.localDescription.toJSON() };
    if (restart) message.restart = { relay };
    await request(this.socket, "signal", message);
  }

  // Messages from one peer are handled strictly in order: a candidate must not be added
  // while the offer before it is still being applied.
  enqueue(sid, task) {
    const next = (this.queues.get(sid) || this.ready)
      .then(task).catch((error) => console.warn("signal failed", error));
    this.queues.set(sid, next);
  }

  // ``operation`` on ``peer``'s connection, or nothing once that peer is closed.
  until(peer, operation) {
    return Promise.race([operation, peer.closed]);
  }

  async onSignal({ from, description, candidate, restart }) {
    let peer = this.peers.get(from);
    if (description && description.type === "offer") {
      // Two people who enter at once on different server processes can each hear that the
      // other joined, and both offer. Then the side with the smaller socket id gives way:
      // it drops its own offer and answers; the other keeps its offer and ignores theirs.
      const collision = Boolean(peer && peer.offerer && !restart
                                && (peer.makingOffer || peer.pc.signalingState === "have-local-offer"));
      if (collision && this.socket.id > from) return;
      if (!peer || restart || collision) {
        this.close(from, { keepTile: true });
        peer = this.createPeer(from, { offerer: false, relay: Boolean(restart && restart.relay) });
        peer.pending.push(...(this.early.get(from) || []));
        this.early.delete(from);
      }
      await this.until(peer, peer.pc.setRemoteDescription(description)
        .then(() => peer.pc.createAnswer()).then((answer) => peer.pc.setLocalDescription(answer)));
      if (this.peers.get(from) !== peer) return; // closed meanwhile: nothing to answer
      await request(this.socket, "signal", { to: from, description: peer.pc.localDescription.toJSON() });
    } else if (description && peer) {
      await this.until(peer, peer.pc.setRemoteDescription(description));
    } else if (candidate && (!peer || forAnotherOffer(peer, candidate))) {
      // Before its offer (the server may relay a socket's messages out of order): kept for
      // the peer that offer makes. That includes a restart's candidates overtaking the
      // restart offer while the old peer is still here: they would go to the old one.
      this.early.set(from, [...(this.early.get(from) || []), candidate]);
      return;
    }
    if (peer && (description || candidate)) {
      if (candidate) peer.pending.push(candidate);
      if (peer.pc.remoteDescription) {
        for (const pending of peer.pending.splice(0)) {
          if (this.peers.get(from) !== peer) return; // closed meanwhile: none apply
          // One meant for an offer that gave way (above) no longer matches: skip just it.
          await this.until(peer, peer.pc.addIceCandidate(pending))
            .catch((error) => console.warn("candidate skipped", error));
        }
      }
    }
  }

  onPeerState(sid, peer) {
    const state = peer.pc.connectionState;
    if (state === "connected") {
      if (!peer.tile) this.showWithoutMedia(sid, peer);
      this.setState("connected", this.S.connected);
    } else if (state === "failed") {
      if (peer.offerer && !peer.relay && this.hasTurn()) {
        this.setState("connecting", this.S.retrying_turn);
        this.offerTo(sid, { relay: true, restart: true });
      } else {
        this.setState(this.anyConnected() ? "connected" : "connecting", this.S.media_failed);
      }
    } else if (!this.anyConnected() && this.state !== "ended") {
      this.setState("connecting", this.S.waiting_for_others);
    }
  }

  hasTurn() {
    return this.iceServers.some((server) => [].concat(server.urls).some((url) => url.startsWith("turn")));
  }

  anyConnected() {
    return [...this.peers.values()].some((peer) => peer.pc.connectionState === "connected");
  }

  // Connected, but they send neither picture nor sound (camera and microphone blocked or
  // missing): a tile that says so, rather than no tile at all.
  showWithoutMedia(sid, peer) {
    const tile = document.createElement("figure");
    tile.className = "tile no-media";
    tile.dataset.peer = sid;
    const text = document.createElement("figcaption");
    text.textContent = this.S.no_media;
    tile.append(text);
    this.root.querySelector(".video-grid").append(tile);
    peer.tile = tile;
  }

  showRemote(sid, peer, stream) {
    let tile = this.root.querySelector(`[data-peer="${CSS.escape(sid)}"]`);
    if (tile && !tile.querySelector("video")) {
      tile.remove(); // was shown without media; now there is some
      tile = null;
    }
    if (!tile) {
      tile = document.createElement("figure");
      tile.className = "tile";
      tile.dataset.peer = sid;
      const video = document.createElement("video");
      video.setAttribute("data-testid", "remote-video");
      video.autoplay = true;
      video.playsInline = true;
      tile.append(video);
      this.root.querySelector(".video-grid").append(tile);
    }
    const video = tile.querySelector("video");
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch((error) => {
      if (error.name === "NotAllowedError") this.playMuted(video);
    });
    peer.tile = tile;
  }

  // The browser refuses sound before a tap on this page (a reload straight back into the
  // call): play the picture muted and offer one tap for the sound.
  playMuted(video) {
    video.muted = true;
    video.play().catch(() => {});
    const button = this.root.querySelector(".call-sound");
    if (!button) return;
    button.hidden = false;
    button.onclick = () => {
      for (const remote of this.root.querySelectorAll('[data-testid="remote-video"]')) {
        remote.muted = false;
        remote.play().catch(() => {});
      }
      button.hidden = true;
    };
  }

  close(sid, { keepTile = false } = {}) {
    const peer = this.peers.get(sid);
    if (!peer) return;
    peer.pc.onconnectionstatechange = null;
    peer.pc.close();
    peer.markClosed();
    this.peers.delete(sid);
    if (!keepTile && peer.tile) peer.tile.remove();
  }

  drop(sid) {
    this.close(sid);
    this.early.delete(sid);
    if (!this.anyConnected() && this.state !== "ended") {
      this.setState("connecting", this.S.waiting_for_others);
    }
  }

  // --- controls ------------------------------------------------------------------------
  setMuted(muted) {
    for (const track of this.localStream?.getAudioTracks() || []) track.enabled = !muted;
    this.onMedia();
  }

  setCameraOff(off) {
    for (const track of this.localStream?.getVideoTracks() || []) track.enabled = !off;
    this.onMedia();
  }

  // Phones: flip between the front and back camera without renegotiating.
  async switchCamera() {
    const current = this.localStream.getVideoTracks()[0];
    const facing = current?.getSettings().facingMode === "environment" ? "user" : "environment";
    current?.stop();
    const fresh = await navigator.mediaDevices.getUserMedia({ video: { facingMode: facing } });
    const track = fresh.getVideoTracks()[0];
    if (current) this.localStream.removeTrack(current);
    this.localStream.addTrack(track);
    for (const peer of this.peers.values()) {
      const sender = peer.pc.getSenders().find((s) => s.track?.kind === "video" || s.track === current);
      if (sender) await sender.replaceTrack(track);
    }
    this.attachSelf();
  }

  async leave() {
    await request(this.socket, "call_leave");
    this.end("left");
  }

  end(reason) {
    clearInterval(this.qualityTimer);
    for (const sid of [...this.peers.keys()]) this.close(sid);
    for (const [event, handler] of Object.entries(this.handlers)) this.socket.off(event, handler);
    // No frozen last frame of your own camera once the call is over.
    const self = this.root.querySelector(".self video");
    if (self) self.srcObject = null;
    const sound = this.root.querySelector(".call-sound");
    if (sound) sound.hidden = true;
    this.endReason = reason; // "left" (this person hung up) or "ended" (the visit is over)
    this.setState("ended", reason === "left" ? this.S.you_left : this.S.visit_ended);
  }

  setState(state, message) {
    this.state = state;
    this.root.dataset.state = state;
    this.onState(state, message);
  }

  // --- quality -------------------------------------------------------------------------
  async sendQuality() {
    const totals = { rtt: [], jitter: [], lost: 0, received: 0, bytesIn: 0, bytesOut: 0,
                     relayed: null };
    for (const peer of this.peers.values()) {
      const report = await peer.pc.getStats();
      const now = { bytesIn: 0, bytesOut: 0, at: performance.now() };
      report.forEach((entry) => {
        if (entry.type === "candidate-pair" && entry.nominated && entry.currentRoundTripTime != null) {
          totals.rtt.push(entry.currentRoundTripTime * 1000);
          // Through our TURN server when either end of the path is a relay candidate.
          const ends = [report.get(entry.localCandidateId), report.get(entry.remoteCandidateId)];
          const relayed = ends.some((end) => end?.candidateType === "relay");
          totals.relayed = Boolean(totals.relayed) || relayed;
        } else if (entry.type === "inbound-rtp") {
          if (entry.jitter != null) totals.jitter.push(entry.jitter * 1000);
          totals.lost += entry.packetsLost || 0;
          totals.received += entry.packetsReceived || 0;
          now.bytesIn += entry.bytesReceived || 0;
        } else if (entry.type === "outbound-rtp") {
          now.bytesOut += entry.bytesSent || 0;
        }
      });
      if (peer.stats) {
        const seconds = (now.at - peer.stats.at) / 1000;
        totals.bytesIn += (now.bytesIn - peer.stats.bytesIn) / seconds;
        totals.bytesOut += (now.bytesOut - peer.stats.bytesOut) / seconds;
      }
      peer.stats = now;
    }
    if (!this.peers.size) return;
    const mean = (values) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : null);
    const packets = totals.lost + totals.received;
    request(this.socket, "call_quality", {
      rtt_ms: mean(totals.rtt),
      jitter_ms: mean(totals.jitter),
      packet_loss_pct: packets ? (100 * totals.lost) / packets : null,
      bitrate_in_kbps: (totals.bytesIn * 8) / 1000,
      bitrate_out_kbps: (totals.bytesOut * 8) / 1000,
      relayed: totals.relayed,
    });
  }
}

// Wire the call's buttons (mute, camera off, switch camera, leave) inside `root` to
// `call`. A page may make several calls in the same root (leave, then rejoin): the
// buttons are bound once and act on the latest call, and start unpressed for each.
export function bindCallControls(call, root, S) {
  const mic = root.querySelector(".toggle-mic");
  const camera = root.querySelector(".toggle-camera");
  const flip = root.querySelector(".switch-camera");
  const leave = root.querySelector(".leave-call");
  mic.setAttribute("aria-pressed", "false");
  mic.textContent = S.mute;
  camera.setAttribute("aria-pressed", "false");
  camera.textContent = S.camera_off;
  delete mic.dataset.available; // decided afresh for this call's stream
  delete camera.dataset.available;
  showDeviceAvailability(root, S, call.localStream);
  if (root.callControls) {
    root.callControls.call = call;
    return;
  }
  const bound = root.callControls = { call };
  mic.addEventListener("click", () => {
    const muted = mic.getAttribute("aria-pressed") !== "true";
    bound.call.setMuted(muted);
    mic.setAttribute("aria-pressed", String(muted));
    mic.textContent = muted ? S.unmute : S.mute;
  });
  camera.addEventListener("click", () => {
    const off = camera.getAttribute("aria-pressed") !== "true";
    bound.call.setCameraOff(off);
    camera.setAttribute("aria-pressed", String(off));
    camera.textContent = off ? S.camera_on : S.camera_off;
  });
  navigator.mediaDevices?.enumerateDevices().then((devices) => {
    flip.hidden = camera.disabled || devices.filter((d) => d.kind === "videoinput").length < 2;
  });
  flip.addEventListener("click", () => bound.call.switchCamera().catch((e) => console.warn(e)));
  leave.addEventListener("click", () => bound.call.leave());
}

// Mute and "Turn camera off" only where there is a live microphone or camera to act on:
// without one (blocked, missing, unplugged) the button is disabled and says so, instead of
// looking as if it worked. Call again when a track ends.
export function showDeviceAvailability(root, S, stream) {
  const live = (tracks) => tracks.some((track) => track.readyState === "live");
  const buttons = [
    [root.querySelector(".toggle-mic"), live(stream?.getAudioTracks() || []),
     S.mic_unavailable, S.unmute, S.mute],
    [root.querySelector(".toggle-camera"), live(stream?.getVideoTracks() || []),
     S.camera_unavailable, S.camera_on, S.camera_off],
  ];
  for (const [button, available, unavailable, pressedText, text] of buttons) {
    if (button.dataset.available === String(available)) continue;
    button.dataset.available = String(available);
    button.disabled = !available;
    if (!available) {
      button.setAttribute("aria-pressed", "false");
      button.textContent = unavailable;
    } else {
      button.textContent = button.getAttribute("aria-pressed") === "true" ? pressedText : text;
    }
  }
  if (!live(stream?.getVideoTracks() || [])) root.querySelector(".switch-camera").hidden = true;
}
