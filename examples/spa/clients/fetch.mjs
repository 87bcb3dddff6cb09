// fetch: POST with JSON passes the BFF's CSRF rule; credentials: "include" also sends the cookie
// to a BFF on another origin of the same site (same origin: not needed).
export async function viewer() {
  const response = await fetch(`${BFF}/graphql`, {
    method: "POST",
    credentials: "include",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query: "{ viewer { id name email } }" }),
  });
  return response.json(); // { data: { viewer: … } } or { errors: [{ extensions: { code: "UNAUTHENTICATED" } }] }
}
