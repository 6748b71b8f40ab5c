// The app shell for offline start and installing as an app: the page's own files only,
// network first (a new build is taken as soon as it is reachable), the cache when the
// network is not. Nothing else is cached or intercepted (no video: that travels over
// libp2p, never through fetch).
const CACHE = 'camesh-shell-1'
const SHELL = ['./', 'index.html', 'app.js', 'style.css', 'manifest.json', 'icon.svg']

self.addEventListener('install', ev => {
  ev.waitUntil(caches.open(CACHE).then(c => c.addAll(SHELL)).then(() => self.skipWaiting()))
})

self.addEventListener('activate', ev => {
  ev.waitUntil(caches.keys()
    .then(keys => Promise.all(keys.filter(k => k !== CACHE).map(k => caches.delete(k))))
    .then(() => self.clients.claim()))
})

self.addEventListener('fetch', ev => {
  const url = new URL(ev.request.url)
  if (ev.request.method !== 'GET' || url.origin !== self.location.origin) return
  const name = url.pathname.slice(url.pathname.lastIndexOf('/') + 1) || './'
  if (!SHELL.includes(name) && name !== '') return
  ev.respondWith(fetch(ev.request).then(r => {
    if (r.ok) {
      const copy = r.clone()
      caches.open(CACHE).then(c => c.put(ev.request, copy)).catch(() => {})
    }
    return r
  }).catch(async () => (await caches.match(ev.request)) ?? Response.error()))
})
