import Crypto
import Foundation
import HTTPServing
import NIOHTTP1

/// `GET /queue/{basketId}`: the waiting room's page, `web/queue.html` embedded at build time. It
/// is one file with one `<style>` and one `<script>`; the Content-Security-Policy allows exactly
/// those two (by their SHA-256) and requests to this origin, nothing else: no outside script,
/// style, font or frame, and no inline code an injection could add.
enum QueuePage {
    static let html = EmbeddedDocs.sources.first { $0.key == "queue" }?.value ?? ""

    static let contentSecurityPolicy: String = {
        let script = hash(of: element("script", in: html))
        let style = hash(of: element("style", in: html))
        return "default-src 'none'; script-src '\(script)'; style-src '\(style)'; connect-src 'self'; img-src data:; "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }()

    static let response: HTTPResponse = {
        var response = HTTPResponse(status: .ok, body: Array(html.utf8), contentType: "text/html; charset=utf-8")
        response.extraHeaders.append(("Content-Security-Policy", contentSecurityPolicy))
        response.extraHeaders.append(("X-Content-Type-Options", "nosniff"))
        response.extraHeaders.append(("Referrer-Policy", "no-referrer"))
        response.extraHeaders.append(("Cache-Control", "no-cache"))
        return response.prepared()
    }()

    /// The text between `<name>` and `</name>` (the page's only such element).
    static func element(_ name: String, in html: String) -> String {
        guard let open = html.range(of: "<\(name)>"), let close = html.range(of: "</\(name)>", range: open.upperBound..<html.endIndex)
        else { return "" }
        return String(html[open.upperBound..<close.lowerBound])
    }

    static func hash(of text: String) -> String {
        "sha256-" + Data(SHA256.hash(data: Array(text.utf8))).base64EncodedString()
    }
}
