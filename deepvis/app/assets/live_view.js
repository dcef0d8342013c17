// A running run's live view (deepvis.app.stream): reads the run's state file every `data.poll` ms (every
// `data.poll_end` ms once the run is `data.near` done), swaps in a
// new picture once it has loaded (with its caption), shows the progress and the curve picture, and when the run
// is done and its last picture is shown, sends the trigger `ended` once so that the page reruns.
const STYLE = `.deepvis-live { display: flex; gap: 1.5rem; align-items: flex-start; font-family: inherit; }
.deepvis-live.stacked { flex-direction: column; gap: 0.5rem; align-items: stretch; }
.deepvis-live figure { margin: 0; }
.deepvis-live [hidden] { display: none !important; }
.deepvis-live figure img { display: block; image-rendering: pixelated; max-width: 100%; }
.deepvis-live figcaption { color: rgba(49, 51, 63, 0.6); font-size: 0.875rem;
  text-align: center; padding-top: 0.25rem; }
.deepvis-live .deepvis-live-side { flex: 1; min-width: 0; }
.deepvis-live progress { width: 100%; height: 0.5rem; accent-color: #ff4b4b; }
.deepvis-live-text { font-size: 0.875rem; }
.deepvis-live-side img { display: block; max-width: 100%; margin-top: 0.75rem; }`;

export default function(component) {
  const { data, parentElement, setTriggerValue } = component;
  const base = data.url.slice(0, data.url.lastIndexOf('/') + 1);
  const root = document.createElement('div');
  root.className = 'deepvis-live' + (data.stacked ? ' stacked' : '');
  root.dataset.testid = 'deepvis-live';
  root.innerHTML = `<style>${STYLE}</style>`  // no blank text between the tags: a figure's text is its caption
    + '<figure data-testid="deepvis-live-image"><img alt="the run\'s newest image" hidden>'
    + '<figcaption data-testid="deepvis-live-caption">Starting… (the first snapshot is on its way)</figcaption></figure>'
    + '<div class="deepvis-live-side"><div class="deepvis-live-text" data-testid="deepvis-live-progress"></div>'
    + '<progress max="1" value="0"></progress><img class="deepvis-live-chart" alt="the objective per iteration" hidden>'
    + '</div>';
  const [, figure, side] = root.children;
  const [image, caption] = figure.children;
  const [text, bar, chart] = side.children;
  if (typeof data.width === 'number') image.style.width = `${data.width}px`;
  else if (data.width === 'stretch') { figure.style.width = '100%'; image.style.width = '100%'; }
  if (data.stacked) root.prepend(side);  // the progress line above the picture, the curves under it
  if (data.stacked) root.append(chart);
  parentElement.replaceChildren(root);

  let shown = null, chartShown = null, ended = false, busy = false;
  const load = (img, name) => new Promise((resolve) => {  // a picture that has not come in 5 s is tried again
    const next = new Image();
    const late = setTimeout(() => resolve(false), 5000);
    next.onload = () => { clearTimeout(late); img.src = next.src; img.hidden = false; resolve(true); };
    next.onerror = () => { clearTimeout(late); resolve(false); };
    next.src = base + name;
  });
  const poll = async () => {  // the run's fraction done, as last read
    if (busy || ended) return 0;
    busy = true;
    let fraction = 0;
    try {
      const response = await fetch(`${data.url}?t=${Date.now()}`,
                                   { cache: 'no-store', signal: AbortSignal.timeout(5000) });
      if (!response.ok) return;  // not written yet
      const state = await response.json();
      if (state.image && state.image !== shown && await load(image, state.image)) {
        shown = state.image;
        caption.textContent = state.caption;
      }
      if (state.chart && state.chart !== chartShown && await load(chart, state.chart)) chartShown = state.chart;
      if (text.textContent !== state.text) text.textContent = state.text;  // unchanged: nothing to lay out
      if (bar.value !== state.fraction) bar.value = state.fraction;
      fraction = state.fraction;
      if (state.done && (!state.image || shown === state.image)) {
        ended = true;
        setTriggerValue('ended', data.run);
      }
    } catch (error) {
      // a file replaced while read, the server busy: the next poll tries again
    } finally {
      busy = false;
    }
    return fraction;
  };
  let timer = null, unmounted = false;
  const tick = async () => {  // near the end, read more often: the page reruns sooner once the run is done
    const fraction = await poll();
    if (!unmounted && !ended) timer = setTimeout(tick, fraction >= data.near ? data.poll_end : data.poll);
  };
  tick();
  return () => { unmounted = true; clearTimeout(timer); };
}
