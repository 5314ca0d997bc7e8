// Entry point: sign-in or the navigation and the routed pages.

import { token, forgetToken, whenUnauthorized } from './api.js';
import { h } from './dom.js';
import * as router from './router.js';
import { showSignIn } from './pages/signin.js';
import { overviewPage } from './pages/overview.js';
import { gatewaysPage, gatewayFormPage, gatewayPage } from './pages/gateways.js';
import { applicationsPage, applicationFormPage, applicationPage, deviceFormPage } from './pages/applications.js';
import { devicePage } from './pages/device.js';
import { profilesPage, profileFormPage } from './pages/device_profiles.js';

router.route('/', overviewPage);
router.route('/gateways', gatewaysPage);
router.route('/gateways/new', (m, p, c) => gatewayFormPage(m, {}, c));
router.route('/gateways/:id/edit', gatewayFormPage);
router.route('/gateways/:id', gatewayPage);
router.route('/applications', applicationsPage);
router.route('/applications/new', (m, p, c) => applicationFormPage(m, {}, c));
router.route('/applications/:id/edit', applicationFormPage);
router.route('/applications/:id/devices/new', (m, p, c) => deviceFormPage(m, { applicationId: p.id }, c));
router.route('/applications/:id', applicationPage);
router.route('/devices/:devEui/edit', deviceFormPage);
router.route('/devices/:devEui', devicePage);
router.route('/device-profiles', profilesPage);
router.route('/device-profiles/new', (m, p, c) => profileFormPage(m, {}, c));
router.route('/device-profiles/:id', profileFormPage);

const NAV = [
  ['#/', 'Overview'],
  ['#/gateways', 'Gateways'],
  ['#/applications', 'Applications'],
  ['#/device-profiles', 'Device profiles'],
];

function navigation() {
  const signout = h('button', { id: 'signout', type: 'button', class: 'link-button' }, 'Sign out');
  signout.addEventListener('click', () => signOut());
  return h(
    'nav',
    { id: 'nav', 'aria-label': 'Main' },
    h('ul', null, NAV.map(([href, label]) => h('li', null, h('a', { href }, label)))),
    signout,
  );
}

function signOut(notice) {
  forgetToken();
  router.leave();
  document.getElementById('nav-slot').replaceChildren();
  showSignIn(document.getElementById('main'), start, notice);
}

function start() {
  document.getElementById('nav-slot').replaceChildren(navigation());
  router.render();
}

whenUnauthorized(() => {
  if (token()) signOut('Your token is no longer accepted (revoked or rotated). Sign in again.');
});

window.addEventListener('hashchange', () => {
  if (token()) {
    router.render();
    document.getElementById('main').focus({ preventScroll: true });
  }
});

document.getElementById('boot')?.remove();
if (token()) start();
else signOut();
