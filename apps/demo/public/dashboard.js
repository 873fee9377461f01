// The dashboard page: renders the cluster view the demo streams over SSE (/events) and posts the
// buttons' actions to /api. Plain browser JavaScript, no build step and no framework.

const $ = (selector) => document.querySelector(selector);
let view;

const escapeHtml = (value) =>
  String(value).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c],
  );
const time = (at) => new Date(at).toLocaleTimeString([], { hour12: false });
const badge = (status) => `<span class="badge s-${escapeHtml(status)}">${escapeHtml(status)}</span>`;

async function post(path, body = {}) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const result = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(result.error ?? response.statusText);
  return result;
}

function act(button, run) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await run();
    } catch (error) {
      console.warn(error);
    } finally {
      button.disabled = false;
    }
  });
}

/** Replaces a select's options only when they changed, keeping the user's choice. */
function setOptions(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.options === key) return;
  const previous = select.value;
  select.dataset.options = key;
  select.innerHTML = options
    .map(([value, text]) => `<option value="${escapeHtml(value)}">${escapeHtml(text)}</option>`)
    .join('');
  if (options.some(([value]) => value === previous)) select.value = previous;
}

function renderInstances() {
  const distributed = view.info.mode === 'distributed';
  $('#instances').innerHTML = view.instances
    .map((i) => {
      const up = i.cache !== undefined;
      const collections = (i.collections ?? []).map(
        (c) => `${escapeHtml(c.name)}(${c.fields.map(escapeHtml).join(', ')})`,
      );
      const canStart = ['stopped', 'killed', 'failed'].includes(i.status);
      return `<div class="card" data-instance="${i.index}" data-status="${escapeHtml(i.status)}" data-schema-version="${i.schemaVersion ?? ''}" data-accepting="${i.acceptingTasks ?? ''}">
        <h3>${escapeHtml(i.label)} ${badge(i.status)}</h3>
        <div class="meta">
          ${i.detail ? `<div class="bad">${escapeHtml(i.detail)}</div>` : ''}
          <div><span class="k">url</span> ${i.url ? `<a href="${escapeHtml(i.url)}/api/state">${escapeHtml(i.url)}</a>` : '—'} ${i.pid ? `<span class="k">pid</span> ${i.pid}` : ''}</div>
          <div><span class="k">schema version</span> <b class="schema-version">${up ? i.schemaVersion : '—'}</b></div>
          <div class="collections" data-collections="${escapeHtml((i.collections ?? []).map((c) => c.name).join(','))}"><span class="k">collections</span> ${collections.join('; ') || (up ? 'none' : '—')}</div>
          <div><span class="k">cache (${escapeHtml(i.cache?.store ?? '')})</span> <span class="cache-hits">${up ? i.cache.hits : '—'}</span> hits / <span class="cache-misses">${up ? i.cache.misses : '—'}</span> misses</div>
          <div><span class="k">running tasks</span> ${up ? i.running : '—'}${up && !i.acceptingTasks ? ' <span class="badge s-queued">paused</span>' : ''}</div>
        </div>
        <button type="button" data-control="stop" data-index="${i.index}" ${i.status === 'running' ? '' : 'disabled'}>Stop</button>
        ${distributed ? `<button type="button" data-control="kill" data-index="${i.index}" ${i.status === 'running' || i.status === 'unreachable' ? '' : 'disabled'}>Kill -9</button>` : ''}
        <button type="button" data-pause="${i.index}" data-paused="${up && !i.acceptingTasks}" ${up ? '' : 'disabled'}>${up && !i.acceptingTasks ? 'Resume tasks' : 'Pause tasks'}</button>
        <button type="button" data-control="start" data-index="${i.index}" ${canStart ? '' : 'disabled'}>Restart</button>
      </div>`;
    })
    .join('');
  setOptions(
    $('#target'),
    view.instances.filter((i) => i.status === 'running').map((i) => [String(i.index), i.label]),
  );
}

function renderControls() {
  const collections = new Map();
  for (const instance of view.instances)
    for (const c of instance.collections ?? []) collections.set(c.name, c.fields);
  setOptions(
    $('#field-collection'),
    [...collections.keys()].sort().map((name) => [name, name]),
  );
  const fields = collections.get($('#field-collection').value) ?? [];
  setOptions(
    $('#field-name'),
    fields.map((field) => [field, field]),
  );
  $('#actions').innerHTML = view.actions
    .slice()
    .reverse()
    .map((a) => `<div class="${a.ok ? '' : 'bad'}">${time(a.at)} ${escapeHtml(a.text)}</div>`)
    .join('');
}

function renderTasks() {
  const c = view.counts;
  $('#task-counts').innerHTML =
    `queued <b data-count="queued">${c.queued}</b> · running <b data-count="running">${c.running}</b> · retrying <b data-count="retrying">${c.retrying}</b> · finished <b data-count="finished">${c.finished}</b> · retried <b data-count="retried">${c.retried}</b> · dead-lettered <b data-count="dead-lettered">${c.deadLettered}</b> · cancelled <b data-count="cancelled">${c.cancelled}</b>`;
  $('#tasks tbody').innerHTML = view.tasks
    .map(
      (
        t,
      ) => `<tr data-task-id="${escapeHtml(t.id)}" data-label="${escapeHtml(t.label)}" data-status="${t.status}" data-instance="${escapeHtml(t.instance)}" data-attempt="${t.attempt}" data-finishes="${t.finishes}" data-progress="${t.progress}" data-ran-on="${escapeHtml(t.ranOn.join(','))}">
        <td>${escapeHtml(t.id)}</td><td>${escapeHtml(t.label)}</td><td>${badge(t.status)}${t.error ? ` <span class="k" title="${escapeHtml(t.error)}">${escapeHtml(t.error.slice(0, 40))}</span>` : ''}</td>
        <td>${escapeHtml(t.ranOn.join(' → ') || '—')}</td><td>${t.attempt || '—'}</td>
        <td><div class="bar"><div style="width:${Math.round(t.progress * 100)}%"></div></div></td><td>${t.finishes}</td>
        <td>${t.status === 'queued' || t.status === 'running' || t.status === 'retrying' ? `<button type="button" data-cancel="${escapeHtml(t.id)}">Cancel</button>` : ''}</td>
      </tr>`,
    )
    .join('');
}

function renderLocks() {
  $('#locks-held').innerHTML =
    view.locks.held
      .map(
        (l) =>
          `<div class="held" data-held-token="${l.token}">🔒 ${escapeHtml(l.instance)} holds <b>${escapeHtml(l.key)}</b> with fencing token <b>${l.token}</b> since ${time(l.since)}</div>`,
      )
      .join('') || '<div class="k">no lock held</div>';
  $('#lock-history tbody').innerHTML = view.locks.history
    .slice()
    .reverse()
    .map(
      (
        l,
      ) => `<tr data-lock-token="${l.token}" data-instance="${escapeHtml(l.instance)}" data-acquired-at="${l.acquiredAt}" data-released-at="${l.releasedAt ?? ''}" data-removed="${l.removed ?? ''}">
        <td><b>${l.token}</b></td><td>${escapeHtml(l.instance)}</td><td>${escapeHtml(l.key)}</td>
        <td>${time(l.acquiredAt)} – ${l.releasedAt ? time(l.releasedAt) : 'holding'}</td>
        <td>${l.releasedAt === undefined ? '…' : l.removed ? `removed ${escapeHtml(l.field)}` : `${escapeHtml(l.field)} already gone`}</td></tr>`,
    )
    .join('');
}

function renderFeed() {
  $('#feed').innerHTML = view.feed
    .slice()
    .reverse()
    .map(
      (f) =>
        `<div data-kind="${f.kind}">${time(f.at)} <b>${escapeHtml(f.instance)}</b> <span class="k">${f.kind}</span> ${escapeHtml(f.text)}</div>`,
    )
    .join('');
}

function render() {
  $('#app-name').textContent = `— app "${view.info.app}", ${view.info.mode}`;
  $('#info').textContent = `${Object.entries(view.info.backends)
    .map(([part, what]) => `${part}: ${what}`)
    .join(' · ')} · db: ${view.info.database}`;
  renderInstances();
  renderControls();
  renderTasks();
  renderLocks();
  renderFeed();
}

function connect() {
  const source = new EventSource('/events');
  source.onopen = () => {
    $('#connection').textContent = 'live';
    $('#connection').className = 'badge s-running';
  };
  source.onerror = () => {
    $('#connection').textContent = 'reconnecting…';
    $('#connection').className = 'badge s-stopped';
  };
  source.onmessage = (message) => {
    view = JSON.parse(message.data);
    render();
  };
}

const target = () => Number($('#target').value) || undefined;
act($('#create-collection'), () =>
  post('/api/actions/collection', { instance: target(), name: $('#collection-name').value.trim() }),
);
act($('#enqueue-tasks'), () => post('/api/actions/tasks', { instance: target(), count: 20 }));
act($('#enqueue-failing'), () => post('/api/actions/failing-tasks', { instance: target() }));
act($('#delete-field'), () =>
  post('/api/actions/delete-field', {
    collection: $('#field-collection').value,
    field: $('#field-name').value,
  }),
);
$('#field-collection').addEventListener('change', () => view && renderControls());
document.addEventListener('click', async (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  try {
    if (button.dataset.pause) {
      button.disabled = true;
      await post('/api/actions/pause-tasks', {
        instance: Number(button.dataset.pause),
        paused: button.dataset.paused !== 'true',
      });
    } else if (button.dataset.cancel) {
      button.disabled = true;
      await post('/api/actions/cancel', { id: button.dataset.cancel, instance: target() });
    } else if (button.dataset.control) {
      button.disabled = true;
      await post(`/api/instances/${button.dataset.index}/${button.dataset.control}`);
    }
  } catch (error) {
    console.warn(error);
  }
});
connect();
