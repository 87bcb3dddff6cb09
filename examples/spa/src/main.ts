import { BFF_ORIGIN, OWN_ORIGIN, getSession, signIn, signOut } from "./bff";
import { client } from "./client";
import { ViewerQuery } from "./documents";
import type { ViewerQuery as ViewerResult } from "./gql/graphql";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const userLine = $("user");
const signInButton = $<HTMLButtonElement>("sign-in");
const signOutButton = $<HTMLButtonElement>("sign-out");
const status = $("status");
const viewerBox = $("viewer");
const errorsBox = $("errors");
let queries = 0;

$("mode").textContent = OWN_ORIGIN
  ? `The BFF is on its own origin: ${BFF_ORIGIN} (CORS, credentials: "include")`
  : "The BFF is on this origin (dev-server proxy or same host)";

async function showSession(): Promise<void> {
  try {
    const session = await getSession();
    userLine.textContent = session.authenticated && session.user
      ? `Signed in as ${session.user.name} (${session.user.email})`
      : "Not signed in";
    signInButton.hidden = session.authenticated;
    signOutButton.hidden = !session.authenticated;
  } catch (error) {
    userLine.textContent = `Cannot reach the BFF: ${String(error)}`;
    signInButton.hidden = false;
  }
}

function money(cents: number): string {
  return (cents / 100).toFixed(2);
}

function renderViewer(viewer: ViewerResult["viewer"]): void {
  viewerBox.replaceChildren();
  if (!viewer) return;
  const who = document.createElement("p");
  who.dataset.testid = "viewer-name";
  who.textContent = `${viewer.name} <${viewer.email}> (id ${viewer.id})`;
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>order</th><th>placed</th><th>total</th></tr></thead>";
  const body = table.createTBody();
  for (const order of viewer.orders) {
    const row = body.insertRow();
    row.dataset.testid = "order";
    // placedAt is a DateTime: a string (codegen maps the scalar to string)
    for (const text of [order.id, new Date(order.placedAt).toLocaleDateString(), money(order.totalCents)]) {
      row.insertCell().textContent = text;
    }
  }
  viewerBox.append(who, table);
}

async function runViewer(): Promise<void> {
  status.textContent = "Loading…";
  errorsBox.textContent = "";
  // requestPolicy network-only: every click asks the BFF (this is what shows the refresh)
  const result = await client.query(ViewerQuery, {}, { requestPolicy: "network-only" }).toPromise();
  queries += 1;
  renderViewer(result.data?.viewer ?? null);
  if (result.error) {
    const codes = result.error.graphQLErrors.map((e) => String(e.extensions?.code ?? e.message));
    const network = result.error.networkError ? [`network: ${result.error.networkError.message}`] : [];
    errorsBox.textContent = [...codes, ...network].join("\n") || result.error.message;
  }
  status.textContent = `Query #${queries} answered at ${new Date().toLocaleTimeString()}`;
  status.dataset.count = String(queries);
  if (result.error?.graphQLErrors.some((e) => e.extensions?.code === "UNAUTHENTICATED")) await showSession();
}

signInButton.addEventListener("click", signIn);
signOutButton.addEventListener("click", async () => {
  const result = await signOut();
  viewerBox.replaceChildren();
  errorsBox.textContent = "";
  status.textContent = result.loggedOut ? "Signed out" : "There was no session";
  // result.endSessionUrl would also end the identity provider's session (a full-page navigation)
  await showSession();
});
$("run-viewer").addEventListener("click", () => void runViewer());

void showSession();
