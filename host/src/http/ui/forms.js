// Forms built from a JSON Schema (what a module describes of its
// configuration, or the directory's): basic settings first, expert ones
// (`x-expert`) folded away, secrets (`writeOnly`) never shown, lists and
// tables editable. Every field carries `data-path`, the dotted path a
// module's refusal names (`providers[1].url`), so the error is shown at it.

export const SECRET_MASK = "********";

let nextId = 0;
const uid = () => `f${++nextId}`;

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// The schema's types without "null": ["string", "null"] is an optional string.
function typesOf(schema) {
  if (!schema) return [];
  if (Array.isArray(schema.type)) return schema.type.filter((t) => t !== "null");
  if (schema.type) return [schema.type];
  if (schema.properties) return ["object"];
  return [];
}

// `anyOf: [X, {type: null}]` (an Option of a complex type) is X, optional.
function unwrap(schema) {
  const alternatives = schema && (schema.anyOf || schema.oneOf);
  if (alternatives && alternatives.length === 2) {
    const other = alternatives.filter((s) => !(s.type === "null" || (Array.isArray(s.type) && s.type.length === 1 && s.type[0] === "null")));
    if (other.length === 1) {
      return { ...other[0], description: schema.description || other[0].description, title: schema.title || other[0].title, default: schema.default ?? other[0].default, "x-expert": schema["x-expert"], optional: true };
    }
  }
  return schema || {};
}

// Constant choices: `enum`, or `oneOf` whose members are each one `const`.
function choicesOf(schema) {
  if (Array.isArray(schema.enum)) return schema.enum.filter((v) => v !== null).map((v) => ({ value: v, help: "" }));
  const alternatives = schema.oneOf || schema.anyOf;
  if (alternatives && alternatives.every((s) => "const" in s || (Array.isArray(s.enum) && s.enum.length === 1))) {
    return alternatives.map((s) => ({ value: "const" in s ? s.const : s.enum[0], help: s.description || "" }));
  }
  return null;
}

// Tagged variants: `oneOf` of objects that each fix one property to a const.
function variantsOf(schema) {
  const alternatives = schema.oneOf || schema.anyOf;
  if (!alternatives || !alternatives.every((s) => s.properties)) return null;
  const tags = Object.keys(alternatives[0].properties).filter((key) =>
    alternatives.every((s) => s.properties[key] && ("const" in s.properties[key] || (s.properties[key].enum || []).length === 1)));
  if (tags.length === 0) return null;
  const tag = tags[0];
  const value = (s) => ("const" in s.properties[tag] ? s.properties[tag].const : s.properties[tag].enum[0]);
  return { tag, variants: alternatives.map((s) => ({ value: value(s), schema: s })) };
}

function humanise(key) {
  const text = String(key).replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function help(schema, id) {
  return schema.description ? el("p", { class: "help", id }, schema.description) : null;
}

function childPath(path, key) {
  return path ? `${path}.${key}` : key;
}

// A field row: label, control, help, and a place for its error.
function row(path, label, control, schema, helpId) {
  return el("div", { class: "field", "data-path": path }, label, control, help(schema, helpId), el("p", { class: "field-error", role: "alert", hidden: true }));
}

// Builds one value's editor. Returns { node, get }.
export function build(schema, value, path, name) {
  schema = unwrap(schema);
  const title = schema.title || humanise(name ?? "value");
  const id = uid();
  const helpId = `${id}-help`;
  const described = schema.description ? helpId : undefined;
  const initial = value === undefined ? schema.default : value;

  const variants = variantsOf(schema);
  if (variants) return buildVariants(schema, variants, initial, path, title);

  const choices = choicesOf(schema);
  if (choices) {
    const select = el("select", { id, "aria-describedby": described });
    if (schema.optional || initial === undefined || initial === null) select.append(el("option", { value: "" }, "—"));
    for (const choice of choices) {
      select.append(el("option", { value: JSON.stringify(choice.value), selected: JSON.stringify(choice.value) === JSON.stringify(initial) }, String(choice.value)));
    }
    return {
      node: row(path, el("label", { for: id }, title), select, schema, helpId),
      get: () => (select.value === "" ? null : JSON.parse(select.value)),
    };
  }

  const types = typesOf(schema);
  const type = types[0];
  if (type === "boolean") {
    const box = el("input", { type: "checkbox", id, checked: initial === true, "aria-describedby": described });
    return {
      node: el("div", { class: "field checkbox", "data-path": path }, box, el("label", { for: id }, title), help(schema, helpId), el("p", { class: "field-error", role: "alert", hidden: true })),
      get: () => box.checked,
    };
  }
  if (type === "integer" || type === "number") {
    const input = el("input", { type: "number", id, step: type === "integer" ? "1" : "any", min: schema.minimum, max: schema.maximum, "aria-describedby": described });
    if (initial !== undefined && initial !== null) input.value = String(initial);
    return {
      node: row(path, el("label", { for: id }, title), input, schema, helpId),
      get: () => (input.value.trim() === "" ? null : Number(input.value)),
    };
  }
  if (type === "string") {
    if (schema.writeOnly) return buildSecret(schema, initial, path, title, id, helpId);
    const input = el("input", { type: "text", id, "aria-describedby": described, autocomplete: "off" });
    if (initial !== undefined && initial !== null) input.value = String(initial);
    return {
      node: row(path, el("label", { for: id }, title), input, schema, helpId),
      get: () => (input.value === "" && (schema.optional || types.length < typesList(schema).length) ? null : input.value),
    };
  }
  if (type === "array") return buildArray(schema, initial, path, title, id, helpId);
  if (type === "object" && schema.properties) return buildObject(schema, initial || {}, path, title, false);
  if (type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
    return buildMap(schema, initial || {}, path, title);
  }
  return buildRaw(schema, initial, path, title, id, helpId);
}

function typesList(schema) {
  return Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
}

// A secret: never filled in; left empty it stays as stored.
function buildSecret(schema, initial, path, title, id, helpId) {
  const isSet = initial === SECRET_MASK;
  const input = el("input", { type: "password", id, autocomplete: "new-password", placeholder: isSet ? "set (leave empty to keep)" : "not set", "aria-describedby": schema.description ? helpId : undefined });
  return {
    node: row(path, el("label", { for: id }, `${title} (secret)`), input, schema, helpId),
    get: () => (input.value !== "" ? input.value : isSet ? SECRET_MASK : null),
  };
}

// A JSON text box for what the form cannot render otherwise.
function buildRaw(schema, initial, path, title, id, helpId) {
  const area = el("textarea", { id, rows: 3, class: "code", "aria-describedby": schema.description ? helpId : undefined });
  area.value = initial === undefined || initial === null ? "" : JSON.stringify(initial, null, 2);
  return {
    node: row(path, el("label", { for: id }, `${title} (JSON)`), area, schema, helpId),
    get: () => {
      if (area.value.trim() === "") return null;
      try {
        return JSON.parse(area.value);
      } catch (error) {
        throw new FieldError(path, `not JSON: ${error.message}`);
      }
    },
  };
}

export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

function buildArray(schema, initial, path, title, id, helpId) {
  const items = unwrap(schema.items || {});
  const itemTypes = typesOf(items);
  const scalar = !choicesOf(items) && (itemTypes[0] === "string" || itemTypes[0] === "integer" || itemTypes[0] === "number") && !items.writeOnly;
  const list = Array.isArray(initial) ? initial : [];
  if (scalar) {
    // One per line: typed and read like a list, no buttons needed.
    const area = el("textarea", { id, rows: Math.max(2, Math.min(8, list.length + 1)), "aria-describedby": schema.description ? helpId : undefined });
    area.value = list.join("\n");
    return {
      node: row(path, el("label", { for: id }, `${title} (one per line)`), area, schema, helpId),
      get: () => {
        const lines = area.value.split("\n").map((l) => l.trim()).filter((l) => l !== "");
        return itemTypes[0] === "string" ? lines : lines.map(Number);
      },
    };
  }
  const entries = [];
  const holder = el("div", { class: "entries" });
  const fieldset = el("fieldset", { class: "list", "data-path": path }, el("legend", {}, title), help(schema, helpId), holder, el("p", { class: "field-error", role: "alert", hidden: true }));
  const add = (value) => {
    const index = entries.length;
    const built = build(items, value, `${path}[${index}]`, `${title} ${index + 1}`);
    const entry = { built, node: null };
    const remove = el("button", { type: "button", class: "secondary", onclick: () => {
      entries.splice(entries.indexOf(entry), 1);
      entry.node.remove();
    } }, `Remove ${title} ${index + 1}`);
    entry.node = el("div", { class: "entry" }, built.node, remove);
    entries.push(entry);
    holder.append(entry.node);
  };
  list.forEach(add);
  fieldset.append(el("button", { type: "button", class: "secondary", onclick: () => add(undefined) }, `Add ${title.toLowerCase()}`));
  return { node: fieldset, get: () => entries.map((entry) => entry.built.get()) };
}

// A table of names to values (e.g. a provider's secrets).
function buildMap(schema, initial, path, title) {
  const valueSchema = unwrap(schema.additionalProperties);
  const rows = [];
  const holder = el("div", { class: "entries" });
  const fieldset = el("fieldset", { class: "map", "data-path": path }, el("legend", {}, title), help(schema, uid()), holder, el("p", { class: "field-error", role: "alert", hidden: true }));
  const add = (key, value) => {
    const keyId = uid();
    const keyInput = el("input", { type: "text", id: keyId, value: key ?? "" });
    const built = build(valueSchema, value, `${path}.${key ?? ""}`, "value");
    const entry = { keyInput, built, node: null };
    entry.node = el("div", { class: "entry pair" }, el("div", { class: "field" }, el("label", { for: keyId }, "Name"), keyInput), built.node,
      el("button", { type: "button", class: "secondary", onclick: () => { rows.splice(rows.indexOf(entry), 1); entry.node.remove(); } }, "Remove"));
    rows.push(entry);
    holder.append(entry.node);
  };
  for (const [key, value] of Object.entries(initial)) add(key, value);
  fieldset.append(el("button", { type: "button", class: "secondary", onclick: () => add("", undefined) }, `Add to ${title.toLowerCase()}`));
  return {
    node: fieldset,
    get: () => Object.fromEntries(rows.filter((r) => r.keyInput.value.trim() !== "").map((r) => [r.keyInput.value.trim(), r.built.get()])),
  };
}

function buildVariants(schema, { tag, variants }, initial, path, title) {
  const id = uid();
  const current = initial && initial[tag] !== undefined ? initial[tag] : variants[0].value;
  const select = el("select", { id });
  for (const variant of variants) select.append(el("option", { value: JSON.stringify(variant.value), selected: variant.value === current }, String(variant.value)));
  const body = el("div", { class: "variant" });
  let built = null;
  const show = (value, values) => {
    const variant = variants.find((v) => JSON.stringify(v.value) === JSON.stringify(value)) || variants[0];
    const properties = { ...variant.schema.properties };
    delete properties[tag];
    built = buildObject({ ...variant.schema, properties }, values || {}, path, title, true);
    body.replaceChildren(built.node);
  };
  select.addEventListener("change", () => show(JSON.parse(select.value), {}));
  show(current, initial);
  const fieldset = el("fieldset", { class: "variants", "data-path": path }, el("legend", {}, title), help(schema, uid()),
    el("div", { class: "field", "data-path": childPath(path, tag) }, el("label", { for: id }, humanise(tag)), select, el("p", { class: "field-error", role: "alert", hidden: true })), body);
  return { node: fieldset, get: () => ({ [tag]: JSON.parse(select.value), ...built.get() }) };
}

// An object: its basic settings, then its expert settings folded away.
function buildObject(schema, values, path, title, bare) {
  const basic = el("div", { class: "basic" });
  const expert = el("div", { class: "expert-fields" });
  const fields = [];
  for (const [key, property] of Object.entries(schema.properties || {})) {
    const built = build(property, values[key], childPath(path, key), key);
    fields.push([key, built]);
    (property["x-expert"] || unwrap(property)["x-expert"] ? expert : basic).append(built.node);
  }
  const parts = [basic];
  if (expert.childElementCount > 0) parts.push(el("details", { class: "expert" }, el("summary", {}, "Expert settings"), expert));
  const node = bare || !path ? el("div", { class: "object", "data-path": path || undefined }, ...parts) : el("fieldset", { class: "object", "data-path": path }, el("legend", {}, title), help(schema, uid()), ...parts, el("p", { class: "field-error", role: "alert", hidden: true }));
  return {
    node,
    get: () => {
      const result = {};
      for (const [key, built] of fields) {
        const value = built.get();
        if (value !== null && value !== undefined) result[key] = value;
      }
      return result;
    },
  };
}

// The whole form for a schema and values.
export function buildForm(schema, values) {
  return buildObject(unwrap(schema), values || {}, "", schema.title || "", true);
}

export function clearErrors(root) {
  for (const node of root.querySelectorAll(".field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of root.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

// Shows `message` at the field `path` names (or the nearest enclosing one);
// returns whether a place was found.
export function showFieldError(root, path, message) {
  let candidate = path;
  while (candidate) {
    const field = [...root.querySelectorAll("[data-path]")].find((node) => node.dataset.path === candidate);
    if (field) {
      const error = [...field.children].find((child) => child.classList.contains("field-error"));
      if (error) {
        error.textContent = message;
        error.hidden = false;
      }
      const control = field.querySelector("input, select, textarea");
      if (control) {
        control.setAttribute("aria-invalid", "true");
        if (error) {
          error.id = error.id || uid();
          control.setAttribute("aria-errormessage", error.id);
        }
        // An expert setting is unfolded to show its error.
        const details = control.closest("details");
        if (details) details.open = true;
        control.focus();
      }
      return true;
    }
    candidate = candidate.includes(".") || candidate.includes("[") ? candidate.replace(/(\.[^.[\]]+|\[\d+\])$/, "") : "";
  }
  return false;
}
