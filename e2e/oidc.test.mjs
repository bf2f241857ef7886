// Sign-in through a real OpenID Connect provider (Okta's stand-in, e2e/oidc/provider.mjs) in
// Debian's headless Chromium. `cargo test --test suite e2e::` starts a second shop in OIDC mode and
// runs this file with E2E_OIDC_BASE_URL (skipped without it outside CI).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.E2E_OIDC_BASE_URL;
let browser;

before(async () => {
  if (!BASE) return;
  browser = await chromium.launch({
    executablePath: process.env.E2E_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});
after(async () => browser && (await browser.close()));

async function newVisitor() {
  const context = await browser.newContext({ baseURL: BASE });
  const page = await context.newPage();
  page.on("pageerror", (err) => assert.fail(`script error on ${page.url()}: ${err}`));
  return { context, page };
}

/** From the shop's "Sign in" link through the provider's login and consent pages, and back. */
async function signInAtProvider(page, login) {
  await page.goto("/");
  await page.getByRole("link", { name: "Sign in", exact: true }).click();
  await page.locator("input[name=login]").fill(login);
  await page.locator("input[name=password]").fill("any password");
  await page.getByRole("button", { name: "Sign-in" }).click();
  await page.getByRole("button", { name: "Continue" }).click();
  try {
    await page.getByText(`Signed in as ${login}`).waitFor({ timeout: 10000 });
  } catch (e) {
    assert.fail(`not signed in at ${page.url()}: ${(await page.locator("body").innerText()).slice(0, 500)}`);
  }
  assert.ok(page.url().startsWith(BASE), `back at the shop: ${page.url()}`);
}

test("a shopper signs in at the provider, shops and signs out", { skip: !BASE }, async () => {
  const { context, page } = await newVisitor();
  await signInAtProvider(page, "asha");
  await page.locator("button:not([disabled])", { hasText: "Add to cart" }).first().click();
  await page.waitForLoadState();
  await page.goto("/cart");
  await page.getByRole("heading", { name: "Your cart" }).waitFor();
  assert.ok((await page.locator("table.lines tbody tr").count()) >= 1, "the cart has a line");
  // A customer is not let into the stock pages.
  const refused = await page.goto("/admin/products");
  assert.equal(refused.status(), 403);
  await page.goto("/");
  // Signing out ends the shop's session, then the provider's (which may ask first), then home.
  await page.getByRole("button", { name: "Sign out" }).click();
  const signInLink = page.getByRole("link", { name: "Sign in", exact: true });
  const confirm = page.getByRole("button", { name: "Yes, sign me out" });
  try {
    await signInLink.or(confirm).first().waitFor({ timeout: 10000 });
  } catch (e) {
    assert.fail(`signing out stopped at ${page.url()}: ${(await page.locator("body").innerText()).slice(0, 400)}`);
  }
  if (await confirm.isVisible()) await confirm.click();
  await signInLink.waitFor();
  assert.ok(page.url().startsWith(BASE), `back at the shop: ${page.url()}`);
  await context.close();
});

test("a member of the admin group restocks", { skip: !BASE }, async () => {
  const { context, page } = await newVisitor();
  await signInAtProvider(page, "admin-ravi");
  await page.getByRole("link", { name: "Stock" }).click();
  await page.getByLabel("Name or SKU").fill("sandal");
  await page.locator("#picker-results").getByRole("link", { name: "Sandalwood Candle" }).click();
  const onHand = Number(await page.getByTestId("on-hand").innerText());
  await page.getByLabel("Restock units").fill("3");
  await page.getByRole("button", { name: "Restock" }).click();
  await page.getByText("Restocked 3 units").waitFor();
  assert.equal(Number(await page.getByTestId("on-hand").innerText()), onHand + 3);
  await context.close();
});
