//! The options of `pods/exec` and `pods/attach` (PodExecOptions, PodAttachOptions) as their query carries them,
//! checked as Kubernetes checks them: the apiserver before it relays the request, the node agent again.

/// Which of a container's streams a session joins, and for exec the command to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The container (empty: the pod's only container).
    pub container: String,
    /// argv of the command to run (exec only).
    pub command: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client receives stdout.
    pub stdout: bool,
    /// Whether the client receives stderr.
    pub stderr: bool,
    /// Whether the client asked for a terminal (stderr then comes on stdout).
    pub tty: bool,
}

/// Which subresource the options are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// `exec`: a new process in the container.
    Exec,
    /// `attach`: the container's running process.
    Attach,
}

/// Most arguments an exec command may have, and most bytes in all.
const MAX_ARGS: usize = 4096;
const MAX_COMMAND_BYTES: usize = 128 << 10;

/// Reads the options from a query (`command=ls&command=-l&stdout=true&container=app`).
pub fn parse(raw_query: &str, session: Session) -> Result<StreamOptions, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw_query).map_err(|e| format!("invalid query: {e}"))?;
    let mut options = StreamOptions::default();
    for (key, value) in pairs {
        match key.as_str() {
            "container" => options.container = value,
            "command" if session == Session::Exec => options.command.push(value),
            "stdin" => options.stdin = parse_bool(&key, &value)?,
            "stdout" => options.stdout = parse_bool(&key, &value)?,
            "stderr" => options.stderr = parse_bool(&key, &value)?,
            "tty" => options.tty = parse_bool(&key, &value)?,
            _ => {}
        }
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    if session == Session::Exec {
        if options.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        let bytes: usize = options.command.iter().map(String::len).sum();
        if options.command.len() > MAX_ARGS || bytes > MAX_COMMAND_BYTES {
            return Err(format!(
                "the command is too long: at most {MAX_ARGS} arguments and {MAX_COMMAND_BYTES} bytes"
            ));
        }
        if options.command.iter().any(|a| a.contains('\0')) {
            return Err("a command argument must not contain a NUL byte".into());
        }
    }
    if options.tty && options.stderr {
        // As Kubernetes: a terminal has one output, which carries both.
        options.stderr = false;
    }
    Ok(options)
}

/// A boolean as Go's strconv.ParseBool reads it, which Kubernetes uses for query parameters.
fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "invalid value {value:?} for {key}: must be true or false"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_come_from_the_query_as_kubectl_sends_them() {
        let options = parse(
            "command=ls&command=-l%20x&container=app&stdin=true&stdout=true&stderr=true&tty=false",
            Session::Exec,
        )
        .unwrap();
        assert_eq!(options.command, ["ls", "-l x"]);
        assert_eq!(options.container, "app");
        assert!(options.stdin && options.stdout && options.stderr && !options.tty);
        let tty = parse("command=sh&stdin=1&stdout=1&stderr=1&tty=1", Session::Exec).unwrap();
        assert!(
            tty.tty && !tty.stderr,
            "a terminal merges stderr into stdout"
        );
    }

    #[test]
    fn bad_options_are_refused_with_kubernetes_messages() {
        let refused = |query: &str, session| parse(query, session).unwrap_err();
        assert!(refused("command=ls", Session::Exec).contains("at least 1 of stdin"));
        assert!(refused("stdout=true", Session::Exec).contains("at least one command"));
        assert!(refused("command=ls&stdout=yes", Session::Exec).contains("invalid value"));
        assert!(refused("command=a%00b&stdout=1", Session::Exec).contains("NUL"));
        let long = "command=x&".repeat(MAX_ARGS + 1) + "stdout=1";
        assert!(refused(&long, Session::Exec).contains("too long"));
        assert_eq!(
            parse("stdout=true&command=ignored", Session::Attach)
                .unwrap()
                .command,
            Vec::<String>::new()
        );
    }
}
