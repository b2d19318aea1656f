// Drives the callhost web UI in Debian's Chromium, as an administrator
// would: started by host/tests/it/web_ui.rs, which runs `callhost serve`
// and the SIP phones. Lines on stdout: `STEP name` as it goes, `WAIT what`
// when the Rust side must act (it answers `GO` on stdin), `PASS` at the end.
// Any failed expectation throws: the process exits non-zero with the reason.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import path from "node:path";

const url = process.env.CALLHOST_URL;
const name = process.env.CALLHOST_ADMIN;
const password = process.env.CALLHOST_PASSWORD;
const helloPackage = process.env.CALLHOST_HELLO_PACKAGE;
const shots = process.env.CALLHOST_SCREENSHOTS;
const timeout = 20_000;

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function waitFor(what) {
  console.log(`WAIT ${what}`);
  const { value } = await lines.next();
  assert.equal(value, "GO", `the test runner answered ${value} to ${what}`);
}
const step = (text) => console.log(`STEP ${text}`);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(timeout);
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error" && !/status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
});

async function shot(file) {
  if (shots) await page.screenshot({ path: path.join(shots, file), fullPage: true });
}

// Every visible field has a label (or an accessible name).
async function everyFieldLabelled(where) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((field) => field.type !== "hidden" && field.offsetParent !== null)
      .filter((field) => field.labels.length === 0 && !field.getAttribute("aria-label"))
      .map((field) => field.outerHTML));
  assert.deepEqual(unlabelled, [], `${where}: fields without a label`);
}

try {
  step("login with the keyboard, a wrong password first");
  await page.goto(url);
  await page.locator("#login-name").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "login-name");
  await page.keyboard.type(name);
  await page.keyboard.press("Tab");
  await page.keyboard.type("not the password");
  await page.keyboard.press("Enter");
  await page.getByRole("alert").filter({ hasText: "wrong name or password" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "login-password");
  await everyFieldLabelled("login");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  await page.getByText(`Logged in as ${name}`).waitFor();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();

  step("upload a module");
  await page.getByRole("link", { name: "Modules" }).click();
  await page.getByRole("heading", { name: "Module library" }).waitFor();
  await page.locator("#package-file").setInputFiles(helloPackage);
  await page.getByRole("button", { name: "Install" }).click();
  await page.locator(".notice.ok").filter({ hasText: "installed hello" }).waitFor();
  const helloRow = page.locator("tr").filter({ hasText: "(hello)" });
  await helloRow.waitFor();
  assert.match(await helloRow.innerText(), /signed by/);
  await shot("modules.png");

  step("create and configure an instance; the module's refusal shows at its field");
  await page.getByRole("link", { name: "Instances" }).click();
  await page.getByRole("heading", { name: "Instances", exact: true }).waitFor();
  await page.locator("#new-module").selectOption("hello");
  await page.locator("#new-name").fill("greeter");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("heading", { name: "Instance greeter" }).waitFor();
  const greeting = page.locator('[data-path="greeting"] input');
  await greeting.fill("");
  await page.getByRole("button", { name: "Save configuration" }).click();
  const fieldError = page.locator('[data-path="greeting"] .field-error');
  await fieldError.filter({ hasText: "must not be empty" }).waitFor();
  assert.equal(await greeting.getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement.closest("[data-path]")?.dataset.path), "greeting");
  // Expert settings are folded away until asked for.
  assert.equal(await page.locator("details.expert").first().getAttribute("open"), null);
  await everyFieldLabelled("instance page");
  await shot("instance-error.png");
  await greeting.fill("Moin");
  await page.getByRole("button", { name: "Save configuration" }).click();
  await page.locator(".notice.ok").filter({ hasText: "Configuration saved." }).waitFor();
  assert.equal(await page.locator('[data-path="greeting"] input').inputValue(), "Moin");

  step("a provider test shows each provider's answer");
  await page.goto(`${url}/#/instances/rl`);
  await page.getByRole("heading", { name: "Instance rl" }).waitFor();
  await page.locator("#action-test").fill("+4940555123");
  await page.getByRole("button", { name: "Run test" }).click();
  const output = page.locator(".action-output");
  await output.filter({ hasText: "Hanna" }).waitFor();
  assert.match(await output.innerText(), /crm/);
  await shot("provider-test.png");

  step("the live view receives a lookup made by a call");
  await page.getByRole("button", { name: "Watch live" }).click();
  // The stream is open before the call is placed.
  await page.waitForTimeout(500);
  await waitFor("live");
  await page.locator("#live-events li").filter({ hasText: "Hafen" }).first().waitFor();

  step("a directory change that the next call follows");
  await page.getByRole("link", { name: "Directory" }).click();
  await page.getByRole("heading", { name: "Directory" }).waitFor();
  const forward = page.locator('[data-path="state.carl.forward_always"] input');
  assert.equal(await forward.inputValue(), "202");
  await forward.fill("201");
  await page.getByRole("button", { name: "Save directory" }).click();
  await page.locator(".notice.ok").filter({ hasText: "loaded 5 users" }).waitFor();
  await everyFieldLabelled("directory");
  await shot("directory.png");
  await waitFor("directory");

  step("the dashboard shows the registrations and the call");
  await page.getByRole("link", { name: "Dashboard" }).click();
  await page.locator("td").filter({ hasText: "answered by anna" }).first().waitFor();
  assert.match(await page.locator("section").first().innerText(), /anna/);
  await shot("dashboard.png");

  step("the audit log shows who changed what");
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("heading", { name: "Audit log" }).waitFor();
  await page.locator("td").filter({ hasText: "PUT /api/v1/directory" }).first().waitFor();
  assert.match(await page.locator("tbody").innerText(), new RegExp(`admin:${name}`));
  await shot("audit.png");

  step("readable on a phone-sized screen");
  await page.setViewportSize({ width: 390, height: 844 });
  for (const view of ["#/dashboard", "#/instances", "#/instances/greeter"]) {
    await page.goto(`${url}/${view}`);
    await page.locator("h1").first().waitFor();
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${view} is ${overflow}px wider than a phone`);
  }
  await shot("phone-instances.png");
  await page.setViewportSize({ width: 1280, height: 800 });

  step("logout");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByText("You are logged out.").waitFor();
  await page.goto(`${url}/#/instances`);
  await page.reload();
  await page.locator("#login-name").waitFor();
  assert.equal(await page.getByRole("link", { name: "Instances" }).isVisible(), false);

  assert.deepEqual(problems, [], "the page logged errors");
  console.log("PASS");
} finally {
  await browser.close();
  input.close();
}
