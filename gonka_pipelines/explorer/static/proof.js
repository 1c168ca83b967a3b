// Checks each payout's Merkle proof in the browser: leaf = SHA-256(0x00 || canonical row bytes), each step
// SHA-256(0x01 || left || right), and the result must equal the root the block header commits to.
"use strict";

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(2 * i, 2), 16);
  return bytes;
}

function bytesToHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(prefix, ...parts) {
  const length = 1 + parts.reduce((n, p) => n + p.length, 0);
  const data = new Uint8Array(length);
  data[0] = prefix;
  let offset = 1;
  for (const part of parts) { data.set(part, offset); offset += part.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

async function checkProof(element) {
  const rowBytes = Uint8Array.from(atob(element.dataset.leafBytes), (c) => c.charCodeAt(0));
  const leaf = await sha256(0x00, rowBytes);
  if (bytesToHex(leaf) !== element.dataset.leaf) return { ok: false, why: "the row's bytes do not hash to the leaf" };
  let current = leaf;
  for (const [side, sibling] of JSON.parse(element.dataset.steps)) {
    current = side === "left" ? await sha256(0x01, hexToBytes(sibling), current) : await sha256(0x01, current, hexToBytes(sibling));
  }
  const root = bytesToHex(current);
  return root === element.dataset.root ? { ok: true, why: `root ${root.slice(0, 16)}… recomputed in this page` }
                                       : { ok: false, why: `climbs to ${root.slice(0, 16)}…, not the header's root` };
}

async function checkAll() {
  for (const element of document.querySelectorAll(".proof")) {
    const epoch = element.dataset.epoch;
    let result;
    try {
      result = await checkProof(element);
    } catch (error) {
      result = { ok: false, why: `cannot check here (${error})` };
    }
    for (const label of document.querySelectorAll(`[data-for="${epoch}"]`)) {
      label.textContent = result.ok ? `verified ✓ (${result.why})` : `NOT verified ✗ (${result.why})`;
      label.classList.add(result.ok ? "verified" : "unverified");
    }
  }
}

checkAll();
