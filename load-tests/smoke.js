// Smoke load test: 30 seconds of shoppers browsing the demo shop through Rempart.
//
//   rempart demo                 # or: cargo run --release -- demo
//   k6 run load-tests/smoke.js
//
// BASE_URL (default http://127.0.0.1:8080) must be a loopback address: this
// script refuses to run against anything else. See load-tests/README.md.

import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

const LOOPBACK = /^https?:\/\/(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d+)?$/;
if (!LOOPBACK.test(BASE_URL)) {
  throw new Error(`BASE_URL ${BASE_URL} is not a loopback address; this smoke test only targets a local demo`);
}

export const options = {
  scenarios: {
    browse: {
      executor: 'ramping-vus',
      startVUs: 0,
      // 30 s in all: ramp up, hold, ramp down.
      stages: [
        { duration: '10s', target: 20 },
        { duration: '15s', target: 20 },
        { duration: '5s', target: 0 },
      ],
      gracefulRampDown: '5s',
      gracefulStop: '5s',
    },
  },
  thresholds: {
    // Responses outside 200-399 (redirects followed count as their own requests).
    http_req_failed: ['rate<0.01'],
    // Loopback, sample shop: 95% of requests under 200 ms.
    http_req_duration: ['p(95)<200'],
    checks: ['rate>0.99'],
  },
};

function hasRequestId(res) {
  return Object.keys(res.headers).some((name) => name.toLowerCase() === 'x-request-id');
}

// One page view: GET (or POST), then the checks every page must pass.
function page(name, res) {
  check(res, {
    [`${name}: status 200`]: (r) => r.status === 200,
    [`${name}: x-request-id`]: hasRequestId,
  });
  sleep(0.1 + Math.random() * 0.4);
}

function get(name, path) {
  page(name, http.get(`${BASE_URL}${path}`, { tags: { name } }));
}

export default function () {
  get('home', '/');
  get('category', '/product-category/clothing/');
  get('product', '/product/beanie/');
  get('search', '/?s=hood');

  // One shopper in ten adds to the cart: POST answers 302 to /cart/, which
  // k6 follows (the cart lives in cookies, kept per virtual user).
  if (Math.random() < 0.1) {
    const added = http.post(
      `${BASE_URL}/cart/`,
      { 'add-to-cart': 'beanie', quantity: '1' },
      { tags: { name: 'add-to-cart' } },
    );
    page('add-to-cart', added);
    get('cart', '/cart/');
  }
}
