//! H2, H3: instances with their own configuration, order, level and log;
//! refusals name the field; export and import.

use crate::common;

use common::Harness;

fn with_hello() -> Harness {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    h.load_office();
    h
}

fn one_call(h: &Harness) -> serde_json::Value {
    h.simulate("[[calls]]\nfrom = \"203\"\nto = \"202\"\n")
        .remove(0)
}

#[test]
fn invalid_configuration_is_refused_naming_the_field() {
    let h = with_hello();
    // Creating `x` from `text` fails; the error text.
    let refused = |file: &str, text: &str| {
        let bad = h.file(file, text);
        h.fails(&[
            "instance",
            "create",
            "hello",
            "x",
            "--config",
            bad.to_str().unwrap(),
        ])
    };
    let err = refused("bad.toml", "greeting = \"\"\n");
    assert!(
        err.contains("field `greeting`") && err.contains("must not be empty"),
        "{err}"
    );
    let err = refused("bad2.toml", "greting = \"Hi\"\n");
    assert!(err.contains("field `greting`"), "{err}");
    let err = refused("bad3.toml", "numbers = [\"201\", \"\"]\n");
    assert!(err.contains("field `numbers[1]`"), "{err}");
    let err = refused("bad4.toml", "numbers = 201\n");
    assert!(
        err.contains("field `numbers`") && err.contains("invalid type"),
        "{err}"
    );
    let err = refused("bad5.toml", "greeting = \"unclosed\n");
    assert!(err.contains("bad5.toml"), "{err}");
    assert_eq!(
        h.ok(&["instance", "list", "--json"]).trim(),
        "[]",
        "nothing was created"
    );
}

#[test]
fn a_refused_reconfiguration_keeps_the_configuration_in_force() {
    let h = with_hello();
    h.create("hello", "hi", "greeting = \"Moin\"\n");
    let before = h.ok(&["instance", "export", "hi"]);
    let bad = h.file("bad.toml", "greeting = \"\"\n");
    let err = h.fails(&["instance", "configure", "hi", bad.to_str().unwrap()]);
    assert!(err.contains("field `greeting`"), "{err}");
    assert_eq!(h.ok(&["instance", "export", "hi"]), before);
    assert_eq!(one_call(&h)["rang"][0]["display"], "Moin: Carl Clerk");

    let good = h.file("good.toml", "greeting = \"Servus\"\n");
    h.ok(&["instance", "configure", "hi", good.to_str().unwrap()]);
    assert_eq!(one_call(&h)["rang"][0]["display"], "Servus: Carl Clerk");
}

#[test]
fn defaults_are_shown_with_the_configuration_in_force() {
    let h = with_hello();
    h.create("hello", "hi", "");
    let shown = h.ok(&["instance", "show", "hi"]);
    assert!(shown.contains("greeting = \"Hello\""), "{shown}");
    assert!(shown.contains("numbers = []"), "{shown}");
}

#[test]
fn order_decides_which_instance_speaks_last() {
    let h = with_hello();
    h.create("hello", "a", "greeting = \"A\"\n");
    h.create("hello", "b", "greeting = \"B\"\n");
    h.create("hello", "c", "greeting = \"C\"\n");
    let names = |line: &serde_json::Value| -> Vec<String> {
        line["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["hop"] == "sec")
            .map(|d| d["instance"].as_str().unwrap().to_string())
            .collect()
    };
    let line = one_call(&h);
    assert_eq!(names(&line), ["a", "b", "c"]);
    assert_eq!(line["rang"][0]["display"], "C: Carl Clerk");

    h.ok(&["instance", "order", "c", "1"]);
    let positions: Vec<(String, u64)> = h
        .instances()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        positions,
        [
            ("c".to_string(), 1),
            ("a".to_string(), 2),
            ("b".to_string(), 3)
        ]
    );
    let line = one_call(&h);
    assert_eq!(names(&line), ["c", "a", "b"]);
    assert_eq!(line["rang"][0]["display"], "B: Carl Clerk");

    let err = h.fails(&["instance", "order", "c", "9"]);
    assert!(err.contains("position 9 is out of range 1..=3"), "{err}");
}

#[test]
fn deactivated_instances_do_not_act() {
    let h = with_hello();
    h.create("hello", "hi", "greeting = \"Moin\"\n");
    h.ok(&["instance", "deactivate", "hi"]);
    assert_eq!(h.instance("hi")["status"], "inactive");
    let line = one_call(&h);
    assert_eq!(line["rang"][0]["display"], "Carl Clerk");
    assert_eq!(line["decisions"].as_array().unwrap().len(), 0);
    h.ok(&["instance", "activate", "hi"]);
    assert_eq!(one_call(&h)["rang"][0]["display"], "Moin: Carl Clerk");
}

#[test]
fn log_level_is_per_instance_and_the_log_can_be_filtered() {
    let h = with_hello();
    h.create("hello", "quiet", "greeting = \"Q\"\n");
    h.create("hello", "chatty", "greeting = \"C\"\n");
    h.ok(&["instance", "set-level", "chatty", "debug"]);
    one_call(&h);
    let chatty = h.ok(&["instance", "log", "chatty"]);
    assert!(
        chatty.contains("DEBUG hello_module: greeting callee=202"),
        "{chatty}"
    );
    let quiet = h.ok(&["instance", "log", "quiet"]);
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    // Reading with a level shows that level and above only.
    let info_only = h.ok(&["instance", "log", "chatty", "--level", "INFO"]);
    assert!(
        !info_only.contains("DEBUG") && info_only.contains("INFO"),
        "{info_only}"
    );
    let err = h.fails(&["instance", "set-level", "chatty", "loud"]);
    assert!(
        err.contains("`loud`") && err.contains("ERROR, WARN, INFO, DEBUG, TRACE"),
        "{err}"
    );
}

#[test]
fn export_and_import_move_an_instance_to_another_host() {
    let h = with_hello();
    h.ok(&[
        "instance",
        "create",
        "hello",
        "hi",
        "--description",
        "front desk",
    ]);
    let config = h.file("hi.toml", "greeting = \"Grüezi\"\nnumbers = [\"202\"]\n");
    h.ok(&["instance", "configure", "hi", config.to_str().unwrap()]);
    h.ok(&["instance", "set-level", "hi", "WARN"]);
    let exported = h.ok(&["instance", "export", "hi"]);

    let other = with_hello();
    let file = other.file("export.toml", &exported);
    other.ok(&["instance", "import", file.to_str().unwrap()]);
    assert_eq!(other.ok(&["instance", "export", "hi"]), exported);
    let imported = other.instance("hi");
    assert_eq!(imported["description"], "front desk");
    assert_eq!(imported["log_level"], "WARN");
    assert_eq!(one_call(&other)["rang"][0]["display"], "Grüezi: Carl Clerk");

    let err = other.fails(&["instance", "import", file.to_str().unwrap()]);
    assert!(
        err.contains("exists already") && err.contains("--replace"),
        "{err}"
    );
    other.ok(&["instance", "import", file.to_str().unwrap(), "--replace"]);

    let broken = other.file("broken.toml", &exported.replace("Grüezi", ""));
    let err = other.fails(&["instance", "import", broken.to_str().unwrap(), "--replace"]);
    // Named as it is spelled in the export file.
    assert!(
        err.contains(&format!("{}: ", broken.display())) && err.contains("field `config.greeting`"),
        "{err}"
    );
    assert_eq!(
        other.ok(&["instance", "export", "hi"]),
        exported,
        "refused import changed nothing"
    );
}

#[test]
fn actions_answer_json_and_unknown_actions_list_the_known_ones() {
    let h = with_hello();
    h.create("hello", "hi", "greeting = \"Ahoi\"\n");
    let answer: serde_json::Value =
        serde_json::from_str(&h.ok(&["instance", "action", "hi", "greet", "Bob"])).unwrap();
    assert_eq!(answer["text"], "Ahoi, Bob!");
    let err = h.fails(&["instance", "action", "hi", "dance"]);
    assert!(
        err.contains("no action `dance`") && err.contains("greet [NAME]"),
        "{err}"
    );
}

#[test]
fn unknown_instance_and_module_names_are_named_in_errors() {
    let h = with_hello();
    let err = h.fails(&["instance", "activate", "ghost"]);
    assert!(err.contains("`ghost`"), "{err}");
    let err = h.fails(&["instance", "create", "nosuch", "x"]);
    assert!(err.contains("no module `nosuch`"), "{err}");
    let err = h.fails(&["instance", "create", "hello", "bad name"]);
    assert!(err.contains("`bad name`"), "{err}");
}

#[test]
fn a_deleted_instance_keeps_its_files_aside_and_the_name_starts_fresh() {
    let h = with_hello();
    h.create("hello", "hi", "greeting = \"Old\"\n");
    h.ok(&["instance", "set-level", "hi", "DEBUG"]);
    one_call(&h);
    assert!(h.ok(&["instance", "log", "hi"]).contains("greeting"));
    let out = h.ok(&["instance", "delete", "hi"]);
    assert!(out.contains("kept in"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(h.data().join("instances/.deleted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1);
    let old_log = std::fs::read_to_string(kept[0].join("instance.log")).unwrap();
    assert!(old_log.contains("greeting"), "{old_log}");
    h.create("hello", "hi", "greeting = \"New\"\n");
    assert!(
        !h.ok(&["instance", "log", "hi"]).contains("DEBUG"),
        "new instance, new log"
    );
}
