// The storefront as a shopper and an admin meet it, in Debian's headless Chromium.
// `cargo test --test suite e2e::` starts a fresh shop and runs this file with:
//   E2E_BASE_URL  the shop's address
//   E2E_CHROMIUM  the browser (/usr/bin/chromium)
//   E2E_OUT       where screenshots and the downloaded PDF go (not committed)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.E2E_BASE_URL;
const OUT = process.env.E2E_OUT || "out";
const SCREENS = join(OUT, "screens");
assert.ok(BASE, "E2E_BASE_URL must name the shop to test");
mkdirSync(SCREENS, { recursive: true });

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.E2E_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});
after(async () => browser && (await browser.close()));

/** A fresh browser profile: its own cookies, so its own session. */
async function newShopper(viewport = DESKTOP) {
  const context = await browser.newContext({ baseURL: BASE, viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.on("pageerror", (err) => assert.fail(`script error on ${page.url()}: ${err}`));
  // The pages must live within the shop's Content-Security-Policy (no inline script or style).
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) {
      assert.fail(`CSP violation on ${page.url()}: ${msg.text()}`);
    }
  });
  return { context, page };
}

async function signIn(page, name, role = "customer") {
  await page.goto("/");
  await page.getByRole("link", { name: "Sign in", exact: true }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(`${name.toLowerCase()}@example.com`);
  if (role === "admin") await page.getByLabel(/Admin \(manages/).check();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Signed in as ${name}`).waitFor();
}

/** Types into the catalog search and waits for the live results to show `name`. */
async function search(page, text, name) {
  await page.getByLabel("Search products").fill(text);
  await page.locator("#results").getByText(`matching “${text}”`).waitFor();
  await page.locator("#results").getByRole("link", { name }).waitFor();
}

async function addToCart(page, name) {
  const card = page.locator("li.card").filter({ has: page.getByRole("link", { name }) });
  await card.getByRole("button", { name: "Add to cart" }).click();
  await page.getByText(`Added 1 × ${name} to your cart`).waitFor({ timeout: 5000 }).catch(async (e) => {
    await shoot(page, "failed-add");
    throw new Error(`${e.message}\nurl: ${page.url()}\n${await page.locator("body").innerText()}`);
  });
}

async function shoot(page, name) {
  await page.screenshot({ path: join(SCREENS, `${name}.png`), fullPage: true });
}

/** The product's stock, straight from the API. */
async function stockOf(name) {
  const res = await fetch(`${BASE}/api/products?q=${encodeURIComponent(name)}`);
  const body = await res.json();
  const p = body.items.find((item) => item.name === name);
  return { on_hand: p.on_hand, reserved: p.reserved };
}

test("a shopper searches, buys two products with UPI, and downloads the journey PDF", async () => {
  const { context, page } = await newShopper();
  await signIn(page, "Asha");
  await shoot(page, "catalog-desktop");

  await search(page, "tea", "Assam Tea 250 g");
  await addToCart(page, "Assam Tea 250 g");
  await search(page, "mug", "Ceramic Mug 350 ml");
  await addToCart(page, "Ceramic Mug 350 ml");

  await page.getByRole("link", { name: "Cart", exact: true }).click();
  await page.getByRole("heading", { name: "Your cart" }).waitFor();
  await assert.doesNotReject(page.getByText("Total (2 items)").waitFor());
  await shoot(page, "cart-desktop");
  await page.getByRole("link", { name: "Checkout" }).click();

  await page.getByLabel("UPI", { exact: true }).check();
  await assert.equal(await page.getByLabel("Card number").isVisible(), false, "only UPI's fields show");
  await page.getByLabel("UPI id").fill("asha@okbank");
  await shoot(page, "checkout-desktop");
  await page.getByRole("button", { name: "Place order" }).click();
  await page.locator("[data-status=completed]").waitFor();
  assert.match(await page.locator("main").innerText(), /Thank you! Your order is complete/);
  await shoot(page, "order-completed-desktop");

  await page.getByRole("link", { name: "My journeys" }).click();
  await page.getByText("this session").waitFor();
  await shoot(page, "journeys-desktop");
  await page.getByRole("link", { name: "Timeline" }).first().click();
  await page.getByText("Order completed").waitFor();
  await shoot(page, "journey-desktop");

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download PDF" }).click(),
  ]);
  const pdf = join(OUT, "journey.pdf");
  await download.saveAs(pdf);
  const text = execFileSync("pdftotext", ["-layout", pdf, "-"], { encoding: "utf8" });
  assert.match(text, /Asha/);
  // The steps, in the order they happened.
  const steps = [
    "Catalog",
    "Search",
    "Add to cart",
    "Add to cart",
    "Your cart",
    "Checkout",
    "Place order",
    "Order placed",
    "Order completed",
  ];
  let at = 0;
  for (const step of steps) {
    const found = text.indexOf(step, at);
    assert.ok(found >= 0, `"${step}" should follow position ${at} in the PDF:\n${text}`);
    at = found + step.length;
  }
  assert.match(text, /Orders completed\s+1/);
  await context.close();
});

test("a declined card shows the decline and leaves the stock as it was", async () => {
  const { context, page } = await newShopper();
  await signIn(page, "Ravi");
  const before = await stockOf("Coorg Coffee Beans 500 g");
  await search(page, "coffee", "Coorg Coffee Beans 500 g");
  await addToCart(page, "Coorg Coffee Beans 500 g");
  await page.goto("/checkout");
  await page.getByLabel("Card", { exact: true }).check();
  await page.getByLabel("Card number").fill("4000 0000 0000 0002");
  await page.getByLabel("Expiry (MM/YY)").fill("12/39");
  await page.getByLabel("CVV").fill("123");
  await page.getByRole("button", { name: "Place order" }).click();
  await page.locator("[data-status=failed]").waitFor();
  const main = await page.locator("main").innerText();
  assert.match(main, /Payment declined/);
  assert.match(main, /Nothing was charged/);
  // Times in the shopper's words and zone, never an ISO timestamp.
  assert.doesNotMatch(main, /\d{4}-\d{2}-\d{2}T\d{2}:/);
  assert.match(main, /Order placed/);
  await shoot(page, "order-declined-desktop");
  // The cart is kept: back at checkout with the same item, to pay another way.
  await page.getByRole("link", { name: "Pay another way" }).click();
  await page.waitForURL(/\/checkout$/);
  assert.match(await page.locator("main").innerText(), /Coorg Coffee Beans 500 g/);
  let after;
  for (let i = 0; i < 50; i++) {
    after = await stockOf("Coorg Coffee Beans 500 g");
    if (after.reserved === before.reserved) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(after, before);
  await context.close();
});

test("an admin restocks a product through the picker", async () => {
  const { context, page } = await newShopper();
  await signIn(page, "Boss", "admin");
  await page.getByRole("link", { name: "Stock" }).click();
  await page.getByLabel("Name or SKU").fill("sandal");
  await page.locator("#picker-results").getByRole("link", { name: "Sandalwood Candle" }).click();
  const onHand = Number(await page.getByTestId("on-hand").innerText());
  await page.getByLabel("Restock units").fill("7");
  await page.getByRole("button", { name: "Restock" }).click();
  await page.getByText("Restocked 7 units").waitFor();
  assert.equal(Number(await page.getByTestId("on-hand").innerText()), onHand + 7);
  await shoot(page, "admin-stock-desktop");
  await page.getByRole("link", { name: "All orders" }).click();
  await page.getByRole("heading", { name: "All orders" }).waitFor();
  // The order picker: find the first scenario's order by its shopper.
  await page.getByLabel("Find an order (order or shopper)").fill("asha");
  await page.locator("#order-results").getByText("ravi@example.com").first().waitFor({ state: "detached" });
  assert.ok((await page.locator("#order-results").getByText("asha@example.com").count()) >= 1);
  await shoot(page, "admin-orders-desktop");
  await context.close();
});

test("every main page at desktop and phone width, usable by keyboard", async () => {
  const { context, page } = await newShopper(PHONE);
  await page.goto("/signin");
  await shoot(page, "signin-phone");
  await signIn(page, "Mira", "admin");
  // The search box is reachable by keyboard and labelled.
  await page.getByLabel("Search products").focus();
  await page.keyboard.type("honey");
  await page.locator("#results").getByText("matching “honey”").waitFor();
  let reached = false;
  for (let i = 0; i < 5 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement.closest("#results li.card a") !== null);
  }
  assert.ok(reached, "Tab reaches the results");
  await addToCart(page, "Wild Forest Honey 500 g");
  const product = await page.getByRole("link", { name: "Wild Forest Honey 500 g" }).getAttribute("href");
  await page.goto("/checkout");
  await page.getByLabel("Cash on delivery").check();
  await page.getByRole("button", { name: "Place order" }).click();
  await page.locator("[data-status=completed]").waitFor();
  const order = new URL(page.url()).pathname;
  await page.goto("/journeys");
  const journey = await page.getByRole("link", { name: "Timeline" }).first().getAttribute("href");
  await page.goto("/cart");

  const pages = [
    ["/", "catalog"],
    [product, "product"],
    ["/cart", "cart"],
    ["/orders", "orders"],
    [order, "order"],
    ["/journeys", "journeys"],
    [journey, "journey"],
    ["/admin/products?q=honey", "admin-stock"],
    ["/admin/orders", "admin-orders"],
  ];
  const NARROW = { width: 360, height: 740 };
  for (const [viewport, size] of [["narrow", NARROW], ["phone", PHONE], ["desktop", DESKTOP]]) {
    await page.setViewportSize(size);
    for (const [path, name] of pages) {
      const res = await page.goto(path);
      assert.equal(res.status(), 200, `${path} answers`);
      // Nothing scrolls sideways: not the page, and not a table inside it.
      const fits = await page.evaluate(() =>
        document.documentElement.scrollWidth <= window.innerWidth + 1 &&
        [...document.querySelectorAll(".table-wrap")].every((t) => t.scrollWidth <= t.clientWidth + 1));
      assert.ok(fits, `${path} fits the ${viewport}'s width`);
      if (viewport !== "narrow") await shoot(page, `${name}-${viewport}`);
    }
  }
  await context.close();
});
