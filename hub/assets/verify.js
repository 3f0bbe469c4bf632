// The browser's verifier (page /verify): runs the hub's own verification code, compiled to
// WebAssembly (/verify.wasm, crate verify-web), on a device's records, key and checkpoint,
// downloaded from this hub or read from saved files. Nothing is sent back. The last checkpoint
// verified per device is kept in local storage, and the next one must extend it.
// Plain script, no framework; every text shown is set with textContent.
'use strict';

(function () {
  const app = document.getElementById('verifier');
  if (!app) return;
  const en = document.documentElement.lang === 'en';
  const t = (fr, english) => (en ? english : fr);
  const status = document.getElementById('status');
  const verdictBox = document.getElementById('verdict');
  const STORE = 'iat-verify:';
  let wasm = null;

  const ready = fetch('/verify.wasm')
    .then((r) => {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.arrayBuffer();
    })
    .then((bytes) => WebAssembly.instantiate(bytes, {}))
    .then((m) => {
      wasm = m.instance.exports;
      say(t('Vérificateur prêt. Choisissez un appareil ou déposez des fichiers.',
        'Verifier ready. Choose a device or drop files.'));
      app.dataset.ready = 'true';
    })
    .catch((e) => {
      say(t('Le vérificateur n\'a pas pu être chargé (' + e + '). Vérifiez avec « hub verify ».',
        'The verifier could not be loaded (' + e + '). Verify with `hub verify`.'));
    });

  function say(text) {
    clear();
    status.textContent = text;
  }

  function clear() {
    for (const el of verdictBox.querySelectorAll('.result')) el.remove();
    delete verdictBox.dataset.ok;
    delete verdictBox.dataset.kind;
    delete verdictBox.dataset.previous;
  }

  // One call into the module: the inputs go into its memory, the verdict comes back as JSON.
  function runVerifier(keys, records, checkpoint, previous) {
    const enc = new TextEncoder();
    [keys, records, checkpoint, previous].forEach((s, i) => {
      const bytes = enc.encode(s);
      const at = wasm.input(i, bytes.length);
      new Uint8Array(wasm.memory.buffer, at, bytes.length).set(bytes);
    });
    const n = wasm.verify();
    const at = wasm.output();
    return JSON.parse(new TextDecoder().decode(new Uint8Array(wasm.memory.buffer, at, n)));
  }

  // The origin a verifier key names (`name+id+key`): the device's log, the storage key.
  function originOf(keys) {
    const line = keys.split('\n').find((l) => l.trim() !== '') || '';
    return line.trim().split('+')[0];
  }

  // The size a checkpoint note states (its second line), or null.
  function sizeOf(checkpoint) {
    const line = checkpoint.split('\n')[1];
    return line !== undefined && /^[0-9]+$/.test(line) ? Number(line) : null;
  }

  function remembered(origin) {
    try {
      const v = JSON.parse(localStorage.getItem(STORE + origin) || 'null');
      return v && Number.isSafeInteger(v.size) && typeof v.root === 'string' ? v : null;
    } catch (e) {
      return null;
    }
  }

  function remember(origin, v) {
    try {
      localStorage.setItem(STORE + origin,
        JSON.stringify({ size: v.checkpoint_size, root: v.root, at: new Date().toISOString() }));
    } catch (e) {
      // Storage refused (private browsing): the next visit simply starts afresh.
    }
  }

  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const opts = { dateStyle: 'medium', timeStyle: 'short', timeZone: app.dataset.tz };
    try {
      return new Intl.DateTimeFormat(en ? 'en-GB' : 'fr-FR', opts).format(d);
    } catch (e) {
      opts.timeZone = 'UTC';
      return new Intl.DateTimeFormat(en ? 'en-GB' : 'fr-FR', opts).format(d) + ' UTC';
    }
  }

  function number(n) {
    return new Intl.NumberFormat(en ? 'en-GB' : 'fr-FR').format(n);
  }

  function seqs(first, last) {
    return first === last ? t('n° ', 'seq ') + first : t('n° ' + first + ' à ' + last, 'seqs ' + first + ' to ' + last);
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function row(dl, term, ...values) {
    dl.append(el('dt', term));
    const dd = el('dd');
    for (const v of values) dd.append(typeof v === 'string' ? document.createTextNode(v) : v);
    dl.append(dd);
  }

  function show(v, prev, source) {
    clear();
    status.textContent = source;
    verdictBox.dataset.ok = String(v.ok);
    if (v.problem) verdictBox.dataset.kind = v.problem.kind;
    const box = el('div', undefined, 'result ' + (v.ok ? 'ok' : 'problem'));
    box.append(el('p', v.ok
      ? t('✔ Historique vérifié : rien n\'a été modifié, retiré ni ajouté depuis que l\'appareil l\'a signé.',
        '✔ History verified: nothing was changed, removed or added since the device signed it.')
      : t('✘ Problème : ', '✘ Problem: ') + (en ? v.problem.en : v.problem.fr), 'headline'));
    const dl = el('dl');
    if (v.origin) row(dl, t('Appareil (origine du journal)', 'Device (log origin)'), el('code', v.origin));
    if (v.records > 0) {
      const last = v.from_seq + v.records - 1;
      row(dl, v.ok ? t('Résultats vérifiés', 'Records verified') : t('Résultats vérifiés avant le problème', 'Records verified before the problem'),
        number(v.records) + ' (' + seqs(v.from_seq, last) + ')' +
        (v.from_seq > 0
          ? t(' ; les ' + number(v.from_seq) + ' précédents ont été retirés par la règle de conservation du hub, leur empreinte est fournie',
            '; the ' + number(v.from_seq) + ' before them were removed under the hub\'s retention rule, their hashes are given')
          : ''));
    } else if (v.ok && v.from_seq > 0) {
      row(dl, t('Résultats vérifiés', 'Records verified'),
        t('aucun un par un : les ' + number(v.from_seq) + ' résultats ont été retirés par la règle de conservation du hub ; leur empreinte, fournie, correspond au point de contrôle signé (les exports mensuels du hub permettent de les vérifier un par un)',
          'none one by one: the ' + number(v.from_seq) + ' records were removed under the hub\'s retention rule; their hashes, given, match the signed checkpoint (the hub\'s monthly exports let them be verified one by one)'));
    } else if (v.ok) {
      row(dl, t('Résultats vérifiés', 'Records verified'), t('aucun', 'none'));
    }
    if (v.first_window && v.last_window) {
      const end = new Date(new Date(v.last_window.start).getTime() + v.last_window.length_ms).toISOString();
      row(dl, t('Période couverte', 'Period covered'), t('du ', 'from ') + when(v.first_window) + t(' au ', ' to ') + when(end));
    }
    if (v.models.length > 0) {
      const ul = el('ul', undefined, 'models');
      for (const m of v.models) {
        const li = el('li');
        const span = m.records === 1 ? seqs(m.first_seq, m.first_seq)
          : number(m.records) + t(' résultats, du n° ' + m.first_seq + ' au n° ' + m.last_seq, ' records, from seq ' + m.first_seq + ' to seq ' + m.last_seq);
        li.append(el('strong', m.id), ' ' + t('version ', 'version ') + m.version + ' (' + span + ') — SHA-256 ', el('code', m.sha256));
        ul.append(li);
      }
      row(dl, t('Modèles qui ont produit ces résultats', 'Models that produced these records'), ul);
    }
    if (v.ok) {
      row(dl, t('Point de contrôle signé', 'Signed checkpoint'),
        number(v.checkpoint_size) + t(' résultats, racine ', ' records, root '), el('code', v.root));
      let since;
      if (!prev) {
        since = t('première vérification de cet appareil dans ce navigateur : ce point de contrôle est gardé pour vérifier, à la prochaine visite, que l\'historique n\'a pas été réécrit',
          'first verification of this device in this browser: this checkpoint is kept to check, on the next visit, that the history was not rewritten');
      } else if (v.previous === 'unchecked') {
        since = t('le point de contrôle vérifié le ' + when(prev.at) + ' (' + number(prev.size) + ' résultats) n\'a pas pu être comparé : ses résultats ne sont plus fournis et aucune preuve de cohérence n\'a été obtenue',
          'the checkpoint verified on ' + when(prev.at) + ' (' + number(prev.size) + ' records) could not be compared: its records are no longer given and no consistency proof was obtained');
      } else {
        since = t('prolonge le point de contrôle vérifié le ' + when(prev.at) + ' (' + number(prev.size) + ' résultats) : l\'historique n\'a pas été réécrit depuis',
          'extends the checkpoint verified on ' + when(prev.at) + ' (' + number(prev.size) + ' records): the history was not rewritten since') +
          (v.previous === 'by-proof' ? t(' (preuve de cohérence)', ' (consistency proof)') : '');
      }
      row(dl, t('Depuis votre dernière visite', 'Since your last visit'), since);
      verdictBox.dataset.previous = v.previous || 'none';
    }
    box.append(dl);
    verdictBox.append(box);
  }

  async function text(url) {
    const r = await fetch(url, { cache: 'no-store' });
    if (!r.ok) throw new Error(url + ' : HTTP ' + r.status + ' ' + (await r.text()).slice(0, 200));
    return r.text();
  }

  async function checkDevice(id) {
    await ready;
    if (!wasm) return;
    say(t('Téléchargement des résultats de ' + id + '…', 'Downloading the records of ' + id + '…'));
    const base = '/export/' + encodeURIComponent(id) + '/';
    let keys, checkpoint, records;
    try {
      // The checkpoint first: the records downloaded after it cover at least its size.
      // keys.txt: the current key and those retired by rotations.
      [keys, checkpoint] = await Promise.all([text(base + 'keys.txt'), text(base + 'checkpoint.txt')]);
      records = await text(base + 'records.jsonl');
    } catch (e) {
      say(t('Téléchargement impossible : ', 'Download failed: ') + e.message);
      return;
    }
    const origin = originOf(keys);
    const prev = remembered(origin);
    let previous = '';
    if (prev) {
      const p = { size: prev.size, root: prev.root };
      const size = sizeOf(checkpoint);
      if (size !== null && size >= prev.size) {
        try {
          const r = await fetch('/api/devices/' + encodeURIComponent(id) + '/consistency?from=' + prev.size + '&to=' + size, { cache: 'no-store' });
          if (r.ok) p.proof = (await r.json()).proof;
        } catch (e) {
          // No proof: the records themselves may still reach back to the previous size.
        }
      }
      previous = JSON.stringify(p);
    }
    say(t('Vérification de ' + number(records.length) + ' octets…', 'Verifying ' + number(records.length) + ' bytes…'));
    await new Promise((r) => setTimeout(r, 0));
    const started = performance.now();
    const v = runVerifier(keys, records, checkpoint, previous);
    const ms = Math.round(performance.now() - started);
    verdictBox.dataset.ms = String(ms);
    show(v, prev, t('Téléchargé de ce hub, vérifié dans ce navigateur en ' + number(ms) + ' ms.',
      'Downloaded from this hub, verified in this browser in ' + number(ms) + ' ms.'));
    if (v.ok) remember(origin, v);
  }

  // The first seq a records file starts at (its first line: a record or a frontier line).
  function startOf(s) {
    const line = s.split('\n').find((l) => l.trim() !== '');
    try {
      const j = JSON.parse(line);
      return j.frontier ? j.frontier.size : j.seq;
    } catch (e) {
      return Infinity;
    }
  }

  async function checkFiles(files) {
    await ready;
    if (!wasm) return;
    const read = await Promise.all([...files].map((f) => f.text().then((s) => ({ name: f.name, s }))));
    let keys = '';
    let checkpoint = '';
    const records = [];
    for (const f of read) {
      if (f.s.includes('\n\n\u2014 ')) checkpoint = f.s;
      else if (/^[^\s+{]+\+[0-9a-f]{8}\+\S+\s*$/.test(f.s.trim().split('\n')[0] || '') && !f.s.trim().startsWith('{')) keys += f.s.trim() + '\n';
      else records.push(f);
    }
    const missing = [];
    if (!keys) missing.push(t('la clé publique (device.vkey)', 'the public key (device.vkey)'));
    if (records.length === 0) missing.push(t('les résultats (records.jsonl)', 'the records (records.jsonl)'));
    if (!checkpoint) missing.push(t('le point de contrôle (checkpoint.txt)', 'the checkpoint (checkpoint.txt)'));
    if (missing.length > 0) {
      say(t('Il manque ', 'Missing: ') + missing.join(', ') + '.');
      return;
    }
    // Several records files (monthly exports) are verified as one, in seq order.
    records.sort((a, b) => startOf(a.s) - startOf(b.s));
    const all = records.map((f) => (f.s.endsWith('\n') ? f.s : f.s + '\n')).join('');
    const origin = originOf(keys);
    const prev = remembered(origin);
    const previous = prev ? JSON.stringify({ size: prev.size, root: prev.root }) : '';
    const started = performance.now();
    const v = runVerifier(keys, all, checkpoint, previous);
    const ms = Math.round(performance.now() - started);
    verdictBox.dataset.ms = String(ms);
    show(v, prev, t('Fichiers ' + read.map((f) => f.name).join(', ') + ', vérifiés dans ce navigateur en ' + number(ms) + ' ms.',
      'Files ' + read.map((f) => f.name).join(', ') + ', verified in this browser in ' + number(ms) + ' ms.'));
    if (v.ok) remember(origin, v);
  }

  document.getElementById('by-device').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = document.getElementById('device').value;
    if (id) checkDevice(id);
  });
  const input = document.getElementById('files');
  input.addEventListener('change', () => {
    if (input.files.length > 0) checkFiles(input.files);
  });
  const drop = document.getElementById('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length > 0) checkFiles(e.dataTransfer.files);
  });
  if (app.dataset.device) checkDevice(app.dataset.device);
})();
