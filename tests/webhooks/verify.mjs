// Verifies deliveries with the Standard Webhooks reference library
// (`standardwebhooks` on npm), as a receiver would.
//
// stdin: {"secrets": ["whsec_…", …], "deliveries": [{"headers": {…}, "body": "…"}, …]}
// stdout: one JSON line per delivery: {"ok": true, "id": "…", "by": <index of the secret that verified>}
//         or {"ok": false, "error": "…"}
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secrets, deliveries } = JSON.parse(input);
const hooks = secrets.map((s) => new Webhook(s));
for (const d of deliveries) {
  let result = { ok: false, error: "no secret verifies it" };
  for (const [i, hook] of hooks.entries()) {
    try {
      const payload = hook.verify(d.body, d.headers);
      result = { ok: true, id: d.headers["webhook-id"], by: i, type: payload.type };
      break;
    } catch (e) {
      result = { ok: false, error: String(e.message || e) };
    }
  }
  console.log(JSON.stringify(result));
}
