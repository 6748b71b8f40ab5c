//! ONVIF events, pure: the requests of a PullPoint subscription (create, pull, renew,
//! unsubscribe) and reading the notifications a camera sends back (topic, UTC time,
//! property operation, source and data items). No IO: [`super::client`] posts these.
//!
//! Everything read is bounded: at most [`MAX_MESSAGES`] notifications per answer and
//! [`MAX_ITEMS`] items per notification; texts are cut to [`MAX_TEXT`] characters.

use xml::reader::{EventReader, XmlEvent};

pub const EVENTS_NS: &str = "http://www.onvif.org/ver10/events/wsdl";
pub const WSN_NS: &str = "http://docs.oasis-open.org/wsn/b-2";
pub const MAX_MESSAGES: usize = 256;
pub const MAX_ITEMS: usize = 32;
pub const MAX_TEXT: usize = 128;

/// `CreatePullPointSubscription` lasting `seconds` unless renewed.
pub fn create_pull_point(seconds: u32) -> String {
    format!(
        "<CreatePullPointSubscription xmlns=\"{EVENTS_NS}\"><InitialTerminationTime>PT{seconds}S</InitialTerminationTime></CreatePullPointSubscription>"
    )
}

/// `PullMessages`: waits up to `timeout_s` for at most `limit` messages.
pub fn pull_messages(timeout_s: u32, limit: u32) -> String {
    format!(
        "<PullMessages xmlns=\"{EVENTS_NS}\"><Timeout>PT{timeout_s}S</Timeout><MessageLimit>{limit}</MessageLimit></PullMessages>"
    )
}

/// `Renew` of a subscription for `seconds` more.
pub fn renew(seconds: u32) -> String {
    format!("<Renew xmlns=\"{WSN_NS}\"><TerminationTime>PT{seconds}S</TerminationTime></Renew>")
}

pub fn unsubscribe() -> String {
    format!("<Unsubscribe xmlns=\"{WSN_NS}\"/>")
}

/// One notification, as the camera sent it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notification {
    /// E.g. `tns1:RuleEngine/CellMotionDetector/Motion`.
    pub topic: String,
    /// The message's `UtcTime` attribute (RFC 3339), as sent.
    pub utc_time: String,
    /// `PropertyOperation`: `Initialized`, `Changed`, `Deleted`, or empty.
    pub operation: String,
    pub source: Vec<(String, String)>,
    pub data: Vec<(String, String)>,
}

fn cut(s: &str) -> String {
    s.trim().chars().take(MAX_TEXT).collect()
}

/// The subscription's address from a `CreatePullPointSubscriptionResponse`.
pub fn parse_subscription(xml: &[u8]) -> Result<String, String> {
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    for ev in EventReader::new(xml) {
        match ev.map_err(|e| format!("not XML: {e}"))? {
            XmlEvent::StartElement { name, .. } => {
                if path.len() > 64 {
                    return Err("XML nested too deep".into());
                }
                path.push(name.local_name);
                text.clear();
            }
            XmlEvent::Characters(t) if text.len() + t.len() <= 4096 => text.push_str(&t),
            XmlEvent::EndElement { .. } => {
                let local = path.pop().unwrap_or_default();
                if local == "Address" && path.last().is_some_and(|p| p == "SubscriptionReference") {
                    let a = text.trim();
                    if a.starts_with("http://") {
                        return Ok(a.to_owned());
                    }
                    return Err(format!("subscription address {a:?} is not http://"));
                }
                text.clear();
            }
            _ => {}
        }
    }
    Err("no subscription address in the answer".into())
}

/// The notifications of a `PullMessagesResponse`.
pub fn parse_notifications(xml: &[u8]) -> Result<Vec<Notification>, String> {
    let mut out: Vec<Notification> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut cur: Option<Notification> = None;
    for ev in EventReader::new(xml) {
        match ev.map_err(|e| format!("not XML: {e}"))? {
            XmlEvent::StartElement { name, attributes, .. } => {
                if path.len() > 64 {
                    return Err("XML nested too deep".into());
                }
                let attr = |n: &str| {
                    attributes
                        .iter()
                        .find(|a| a.name.local_name == n)
                        .map(|a| cut(&a.value))
                        .unwrap_or_default()
                };
                let local = name.local_name;
                match local.as_str() {
                    "NotificationMessage" if out.len() < MAX_MESSAGES => cur = Some(Notification::default()),
                    // The inner tt:Message (inside wsnt:Message) carries time and operation.
                    "Message" if path.last().is_some_and(|p| p == "Message") => {
                        if let Some(n) = cur.as_mut() {
                            n.utc_time = attr("UtcTime");
                            n.operation = attr("PropertyOperation");
                        }
                    }
                    "SimpleItem" => {
                        if let Some(n) = cur.as_mut() {
                            let item = (attr("Name"), attr("Value"));
                            let list = match path.last().map(String::as_str) {
                                Some("Source") => Some(&mut n.source),
                                Some("Data") => Some(&mut n.data),
                                _ => None,
                            };
                            if let Some(list) = list.filter(|l| l.len() < MAX_ITEMS) {
                                list.push(item);
                            }
                        }
                    }
                    _ => {}
                }
                path.push(local);
                text.clear();
            }
            XmlEvent::Characters(t) | XmlEvent::CData(t) if text.len() + t.len() <= 4096 => text.push_str(&t),
            XmlEvent::EndElement { .. } => {
                let local = path.pop().unwrap_or_default();
                match local.as_str() {
                    "Topic" => {
                        if let Some(n) = cur.as_mut() {
                            n.topic = cut(&text);
                        }
                    }
                    "NotificationMessage" => out.extend(cur.take().filter(|n| !n.topic.is_empty())),
                    _ => {}
                }
                text.clear();
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PULL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tns1="http://www.onvif.org/ver10/topics">
<s:Body><tev:PullMessagesResponse>
<tev:CurrentTime>2026-12-07T10:00:01Z</tev:CurrentTime><tev:TerminationTime>2026-12-07T10:01:01Z</tev:TerminationTime>
<wsnt:NotificationMessage>
  <wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic>
  <wsnt:Message><tt:Message UtcTime="2026-12-07T10:00:00.500Z" PropertyOperation="Changed">
    <tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="vsc1"/><tt:SimpleItem Name="Rule" Value="MyMotion"/></tt:Source>
    <tt:Data><tt:SimpleItem Name="IsMotion" Value="true"/></tt:Data>
  </tt:Message></wsnt:Message>
</wsnt:NotificationMessage>
<wsnt:NotificationMessage>
  <wsnt:Topic>tns1:Device/Trigger/DigitalInput</wsnt:Topic>
  <wsnt:Message><tt:Message UtcTime="2026-12-07T10:00:00.900Z" PropertyOperation="Initialized">
    <tt:Source><tt:SimpleItem Name="InputToken" Value="in1"/></tt:Source>
    <tt:Data><tt:SimpleItem Name="LogicalState" Value="false"/></tt:Data>
  </tt:Message></wsnt:Message>
</wsnt:NotificationMessage>
</tev:PullMessagesResponse></s:Body></s:Envelope>"#;

    #[test]
    fn notifications_are_read_with_their_items() {
        let n = parse_notifications(PULL.as_bytes()).expect("parses");
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].topic, "tns1:RuleEngine/CellMotionDetector/Motion");
        assert_eq!(n[0].utc_time, "2026-12-07T10:00:00.500Z");
        assert_eq!(n[0].operation, "Changed");
        assert_eq!(
            n[0].source,
            vec![
                ("VideoSourceConfigurationToken".to_string(), "vsc1".to_string()),
                ("Rule".to_string(), "MyMotion".to_string())
            ]
        );
        assert_eq!(n[0].data, vec![("IsMotion".to_string(), "true".to_string())]);
        assert_eq!(n[1].operation, "Initialized");
        assert!(parse_notifications(b"<a><b>").is_err());
        assert_eq!(parse_notifications(b"<a/>").expect("empty"), vec![]);
    }

    #[test]
    fn the_subscription_address_is_read() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><tev:CreatePullPointSubscriptionResponse xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsa5="http://www.w3.org/2005/08/addressing"><tev:SubscriptionReference><wsa5:Address>http://127.0.0.1:8080/onvif/subscription?id=3</wsa5:Address></tev:SubscriptionReference></tev:CreatePullPointSubscriptionResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_subscription(xml.as_bytes()).expect("address"),
            "http://127.0.0.1:8080/onvif/subscription?id=3"
        );
        assert!(parse_subscription(b"<a/>").is_err());
        assert!(create_pull_point(60).contains("PT60S"));
        assert!(pull_messages(2, 32).contains("<MessageLimit>32</MessageLimit>"));
    }
}
